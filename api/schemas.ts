// Schema pieces the route tables share: strings that can reach PostgreSQL (bounded, no NUL or
// other control characters), names, digests, bounded integers in query strings. Messages name
// the field, because they are what a user reads in the 400.
import { z } from 'zod';
import { parseDigest } from '../registry/digest.ts';
import { isRepositoryName, isTag, parseRepositoryPath } from '../registry/names.ts';

const CONTROL = /[\u0000-\u001f\u007f]/;
// Free text may hold newlines and tabs, never NUL or the other C0 controls.
const TEXT_CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;
// Lone UTF-16 surrogates (from `\ud800` escapes in JSON) are not valid UTF-8 text.
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function typed(field: string, what: string) {
  return { error: (iss: { input: unknown }) => (iss.input === undefined ? `${field} is required` : `${field} must be ${what}`) };
}

/** A one-line string: a name, an address, a password. */
export function line(field: string, max = 255) {
  return z
    .string(typed(field, 'a string'))
    .max(max, { error: `${field} is longer than ${max} characters` })
    .refine((v) => !CONTROL.test(v), { error: `${field} must not contain control characters` })
    .refine((v) => !LONE_SURROGATE.test(v), { error: `${field} is not valid Unicode text` });
}

/** Free text (descriptions, titles): newlines allowed. */
export function text(field: string, max = 64 * 1024) {
  return z
    .string(typed(field, 'a string'))
    .max(max, { error: `${field}: at most ${max} characters` })
    .refine((v) => !TEXT_CONTROL.test(v), { error: `${field} must not contain control characters` })
    .refine((v) => !LONE_SURROGATE.test(v), { error: `${field} is not valid Unicode text` });
}

export function bool(field: string) {
  return z.boolean({ error: `${field} must be true or false` });
}

/** A JSON integer in [min, max]. */
export function int(field: string, min: number, max: number, what = `a whole number from ${min} to ${max}`) {
  return z
    .number({ error: `${field} must be ${what}` })
    .int({ error: `${field} must be ${what}` })
    .min(min, { error: `${field} must be ${what}` })
    .max(max, { error: `${field} must be ${what}` });
}

/** A full repository name (`ns/repo`, `org/team/app`) in the distribution grammar. */
export function repositoryName(field = 'repository') {
  return z.string().refine(isRepositoryName, { error: `${field}: invalid repository name (lowercase letters, digits and separators . _ -, components joined by /)` });
}

/** A repository of the management API: a namespace and a name at least (`ns/repo`). */
export function repositoryPath(field = 'repository') {
  return z.string().refine((v) => parseRepositoryPath(v) !== undefined, { error: `${field}: invalid repository name (namespace/name: lowercase letters, digits and separators . _ -)` });
}

export function digest() {
  return z.string().superRefine((v, ctx) => {
    try {
      parseDigest(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message, path: [] });
    }
  });
}

export function tag(field = 'tag') {
  return z.string().refine(isTag, { error: `${field}: invalid tag (letters, digits, _ . -, at most 128, not starting with . or -)` });
}

/** Names of accounts, organizations, robots' short names, locations: one path segment. */
export function segment(field: string, max = 255) {
  return line(field, max).min(1, { error: `${field} is required` });
}

// ------------------------------------------------------------------ query strings

/** A query parameter given at most once (Koa gives repeated ones as arrays). */
export function queryText(field: string, max = 1024) {
  return z.preprocess(
    (v) => (Array.isArray(v) ? { repeated: true } : v),
    z.string({ error: (iss) => (iss.input && typeof iss.input === 'object' ? `${field} may be given only once` : `${field} must be text`) })
      .max(max, { error: `${field} is longer than ${max} characters` })
      .refine((v) => !CONTROL.test(v), { error: `${field} must not contain control characters` }),
  );
}

/** A whole number in a query string, in [min, max]. */
export function queryInt(field: string, min: number, max: number) {
  const what = `${field} must be a whole number from ${min} to ${max}`;
  return queryText(field, 32)
    .refine((v) => /^\d{1,16}$/.test(v) && Number(v) >= min && Number(v) <= max, { error: what })
    .transform(Number);
}

/** `true`/`false` in a query string. */
export function queryBool(field: string) {
  return queryText(field, 5)
    .refine((v) => v === 'true' || v === 'false', { error: `${field} must be true or false` })
    .transform((v) => v === 'true');
}
