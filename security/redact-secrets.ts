// Secrets out of text an error quotes. Pure string work with no imports, so the workflow sandbox
// can run it too (workflows/failure-redaction.ts) besides the activity interceptor
// (security/failure-redaction.ts).

export const REDACTED = '***';

// scheme://[userinfo@]host… up to whitespace or a closing quote/bracket.
const URL_IN_TEXT = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s/?#@'"<>]*@)?([^\s?#'"<>]*)(\?[^\s#'"<>]*)?/gi;
const CREDENTIAL_HEADER = /\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}/g;
// key=value and "key": "value" pairs whose key names a secret, outside URLs too (connection
// strings, form bodies, JSON quoted by an error).
const SECRET_PAIR = /\b((?:[a-z0-9_-]*(?:password|passwd|secret|token|signature|credential|api[_-]?key|access[_-]?key)[a-z0-9_-]*)["']?\s*[=:]\s*["']?)([^\s&"',;}]+)/gi;

/** `text` with the values of URL query parameters, URL passwords, credential header values and
 * secret-named key=value pairs replaced by `***`, and a failed query's parameters cut off. */
export function redactSecrets(text: string): string {
  let out = text.includes('Failed query:') ? text.replace(/\nparams:[\s\S]*$/, '') : text;
  out = out.replace(URL_IN_TEXT, (_m, scheme: string, userinfo: string | undefined, rest: string, query: string | undefined) => {
    const user = userinfo ? (userinfo.includes(':') ? `${userinfo.slice(0, userinfo.indexOf(':'))}:${REDACTED}@` : userinfo) : '';
    const q = query ? `?${query.slice(1).split('&').map((p) => (p.includes('=') ? `${p.slice(0, p.indexOf('='))}=${REDACTED}` : p)).join('&')}` : '';
    return `${scheme}${user}${rest}${q}`;
  });
  out = out.replace(CREDENTIAL_HEADER, (_m, scheme: string) => `${scheme} ${REDACTED}`);
  out = out.replace(SECRET_PAIR, (m, key: string, value: string) => (value === REDACTED ? m : `${key}${REDACTED}`));
  return out;
}

const SECRET_KEY = /password|passwd|secret|token|signature|credential|authorization|api[_-]?key|access[_-]?key/i;

/** Failure details (ApplicationFailure.details: any JSON) with every string in them redacted and
 * the values of secret-named keys withheld whole. */
export function redactDetails<T>(value: T, depth = 0): T {
  if (typeof value === 'string') return redactSecrets(value) as T;
  if (depth > 16 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v: unknown) => redactDetails(v, depth + 1)) as T;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, SECRET_KEY.test(k) && v != null ? REDACTED : redactDetails(v, depth + 1)])) as T;
}
