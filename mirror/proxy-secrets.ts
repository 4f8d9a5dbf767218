// A mirror's proxy credentials (`http://user:password@proxy:3128`) are kept as the upstream
// password is: sealed with MERIDIAN_SECRET_KEY, bound to their repository and field, never
// returned. The stored proxy URL has its password taken out; the sealed password sits beside it
// in the same JSON column (`http_proxy_password_enc`, base64). GET shows the URL with `***` for
// the password, and a PUT that sends that mask back for the same proxy (scheme, user, host, port)
// keeps the stored password — a GET → edit → PUT round trip works, and a changed proxy needs its
// password again, as a changed upstream registry does.
import { DomainError } from '../platform/errors.ts';
import type { SecretBox } from '../security/secretbox.ts';
import type { ProxySettings } from './config.ts';

export const PROXY_PASSWORD_MASK = '***';

const FIELDS = ['http_proxy', 'https_proxy'] as const;
type ProxyField = (typeof FIELDS)[number];

/** The proxy column as stored. Rows written before proxy passwords were sealed held the password
 * inside the URL; every API start seals those (sealPlaintextProxyPasswords), and until then they
 * are read (and masked) as they are. */
export interface StoredProxySettings extends ProxySettings {
  http_proxy_password_enc?: string | null;
  https_proxy_password_enc?: string | null;
}

export function proxyPasswordContext(repositoryId: number, field: ProxyField): string {
  return `mirror_configs:${repositoryId}:proxy.${field}`;
}

function parse(url: string): URL | undefined {
  try {
    return new URL(url);
  } catch {
    return undefined;
  }
}

/** The URL without its password (the user stays: it is not a secret). */
function withoutPassword(u: URL): string {
  const c = new URL(u.href);
  c.password = '';
  return c.href;
}

/**
 * The column value after applying `input` (the request's proxy settings) to `current` (the
 * stored ones, none for a new mirror): new passwords sealed, a masked one kept when the proxy is
 * the same, cleared fields cleared with their password.
 */
export function sealProxySettings(secrets: SecretBox, repositoryId: number, current: StoredProxySettings | null | undefined, input: ProxySettings): StoredProxySettings {
  const out: StoredProxySettings = { ...(current ?? {}) };
  if (input.no_proxy !== undefined) out.no_proxy = input.no_proxy;
  for (const field of FIELDS) {
    const value = input[field];
    if (value === undefined) continue;
    const encField = `${field}_password_enc` as const;
    const u = value ? parse(value) : undefined;
    if (!value || !u || !u.password) {
      out[field] = value;
      out[encField] = null;
      continue;
    }
    if (decodeURIComponent(u.password) === PROXY_PASSWORD_MASK) {
      const before = current?.[field] ? parse(current[field]) : undefined;
      const stored = current?.[encField];
      if (!before || withoutPassword(before) !== withoutPassword(u) || (!stored && !before.password)) {
        throw new DomainError('invalid', `external_registry_config.proxy.${field}: the proxy changed, so its password must be given again (not ${PROXY_PASSWORD_MASK})`);
      }
      if (stored) continue; // same proxy, same sealed password
      // A row from before sealing: seal the password it holds in the URL now.
      out[field] = withoutPassword(before);
      out[encField] = secrets.seal(decodeURIComponent(before.password), proxyPasswordContext(repositoryId, field)).toString('base64');
      continue;
    }
    out[field] = withoutPassword(u);
    out[encField] = secrets.seal(decodeURIComponent(u.password), proxyPasswordContext(repositoryId, field)).toString('base64');
  }
  return out;
}

/** The proxy URLs with their passwords, for the worker that dials them. */
export function openProxySettings(secrets: SecretBox, repositoryId: number, stored: StoredProxySettings | null | undefined): ProxySettings | null {
  if (!stored) return null;
  const out: ProxySettings = { no_proxy: stored.no_proxy ?? null };
  for (const field of FIELDS) {
    const url = stored[field];
    const enc = stored[`${field}_password_enc`];
    const u = url ? parse(url) : undefined;
    if (!url || !u || !enc) {
      out[field] = url ?? null;
      continue;
    }
    u.password = encodeURIComponent(secrets.open(Buffer.from(enc, 'base64'), proxyPasswordContext(repositoryId, field)));
    out[field] = u.href;
  }
  return out;
}

/** The proxy settings as GET shows them: `***` where a password is. */
export function maskedProxySettings(stored: StoredProxySettings | null | undefined): ProxySettings {
  const out: ProxySettings = { http_proxy: null, https_proxy: null, no_proxy: stored?.no_proxy ?? null };
  for (const field of FIELDS) {
    const url = stored?.[field];
    const u = url ? parse(url) : undefined;
    if (!url || !u) {
      out[field] = url ?? null;
      continue;
    }
    if (stored[`${field}_password_enc`] || u.password) {
      u.password = PROXY_PASSWORD_MASK;
      out[field] = u.href;
    } else {
      out[field] = url;
    }
  }
  return out;
}

/** Re-seals stored proxy passwords with the current key (`meridian secrets rotate`); null when
 * nothing needed it. */
export function resealProxySettings(secrets: SecretBox, repositoryId: number, stored: StoredProxySettings): StoredProxySettings | null {
  let changed = false;
  const out = { ...stored };
  for (const field of FIELDS) {
    const enc = stored[`${field}_password_enc`];
    if (!enc || !secrets.needsRotation(Buffer.from(enc, 'base64'))) continue;
    const ctx = proxyPasswordContext(repositoryId, field);
    out[`${field}_password_enc`] = secrets.seal(secrets.open(Buffer.from(enc, 'base64'), ctx), ctx).toString('base64');
    changed = true;
  }
  return changed ? out : null;
}

/** A row from before proxy passwords were sealed, with each password taken out of its URL and
 * sealed beside it (a sealed one already there is kept); null when no URL holds a password. */
export function sealPlaintextProxyPasswords(secrets: SecretBox, repositoryId: number, stored: StoredProxySettings): StoredProxySettings | null {
  let changed = false;
  const out = { ...stored };
  for (const field of FIELDS) {
    const url = stored[field];
    const u = url ? parse(url) : undefined;
    if (!u || !u.password) continue;
    out[field] = withoutPassword(u);
    const encField = `${field}_password_enc` as const;
    if (!stored[encField]) out[encField] = secrets.seal(decodeLenient(u.password), proxyPasswordContext(repositoryId, field)).toString('base64');
    changed = true;
  }
  return changed ? out : null;
}

function decodeLenient(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
