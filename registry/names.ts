// The OCI distribution-spec grammars for repository names and tags, plus Meridian's rule that a
// repository's first path component is its namespace (a user or an organization).

/** `<name>` from the spec: path components of lowercase alphanumerics joined by separators. */
const COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
export const REPOSITORY_NAME = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
export const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/** Generous, but bounded: names are stored, logged and used in object keys. */
export const MAX_NAME_LENGTH = 255;

export interface RepositoryPath {
  /** `org/team/app` */
  full: string;
  /** `org` */
  namespace: string;
  /** `team/app` */
  name: string;
}

export function isRepositoryName(full: string): boolean {
  return full.length <= MAX_NAME_LENGTH && REPOSITORY_NAME.test(full);
}

/** Splits `ns/rest` — Meridian requires at least two components (namespace and repository). */
export function parseRepositoryPath(full: string): RepositoryPath | undefined {
  if (!isRepositoryName(full)) return undefined;
  const i = full.indexOf('/');
  if (i === -1) return undefined;
  return { full, namespace: full.slice(0, i), name: full.slice(i + 1) };
}

export function isTag(s: string): boolean {
  return TAG.test(s);
}
