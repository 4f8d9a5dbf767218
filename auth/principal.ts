// Who is making a request.
export type Principal =
  | { kind: 'anonymous' }
  | { kind: 'user'; userId: number; username: string; superuser: boolean }
  | { kind: 'robot'; robotId: number; name: string; namespaceId: number };

/** What a registry token can grant on a repository (Docker's token scopes). */
export type RepoAction = 'pull' | 'push' | 'delete';

export const ANONYMOUS: Principal = { kind: 'anonymous' };

export function principalName(p: Principal): string {
  return p.kind === 'anonymous' ? '(anonymous)' : p.kind === 'user' ? p.username : p.name;
}
