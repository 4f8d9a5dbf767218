// Errors domain modules raise for a caller's mistake or for a state they cannot change. The API
// layers turn the kind into a status (problem+json on /api/v1, OCI errors on /v2, a one-line
// message in the CLI); anything else is a bug and answers 500.
export type ErrorKind = 'invalid' | 'not_found' | 'conflict' | 'forbidden' | 'unavailable';

export class DomainError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    readonly detail?: unknown,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export const STATUS_OF_KIND: Record<ErrorKind, number> = {
  invalid: 400,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  unavailable: 503,
};
