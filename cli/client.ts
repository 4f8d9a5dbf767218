// What every `meridian` command shares: where the API is and who we are (from the environment
// and global options), the process's input and output, and one HTTP helper that turns the API's
// problem+json errors into one-line messages.

export interface ApiTarget {
  url: string;
  authorization?: string;
}

/** MERIDIAN_URL; MERIDIAN_TOKEN (an API token) or MERIDIAN_USERNAME + MERIDIAN_PASSWORD. */
export function apiTargetFromEnv(env: Record<string, string | undefined>): ApiTarget {
  const url = (env.MERIDIAN_URL || 'http://127.0.0.1:5000').replace(/\/+$/, '');
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')) {
    throw new CliError(`"${url}" is not an http(s) URL (--url or MERIDIAN_URL)`, 2);
  }
  if (env.MERIDIAN_TOKEN) return { url, authorization: `Bearer ${env.MERIDIAN_TOKEN}` };
  if (env.MERIDIAN_USERNAME) return { url, authorization: `Basic ${Buffer.from(`${env.MERIDIAN_USERNAME}:${env.MERIDIAN_PASSWORD ?? ''}`).toString('base64')}` };
  return { url };
}

export interface CliIo {
  env: Record<string, string | undefined>;
  out: (line: string) => void;
  err: (line: string) => void;
  /** All of standard input (for --password-stdin). */
  readStdin: () => Promise<string>;
  /** Asks a yes/no question on the terminal; undefined when there is no terminal to ask. */
  confirm?: (question: string) => Promise<boolean | undefined>;
  /** Whether standard error is a terminal (progress bars). */
  isTTY?: boolean;
}

/** An error to report as one line (exit 1 when the server refused, 2 for usage). */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export async function api(target: ApiTarget, method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
  let r: Response;
  try {
    r = await fetch(`${target.url}/api/v1${path}`, {
      method,
      headers: { ...(target.authorization ? { Authorization: target.authorization } : {}), ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    const cause = (e as Error).cause;
    throw new CliError(`cannot reach ${target.url}: ${cause instanceof Error ? cause.message : (e as Error).message}`);
  }
  const text = await r.text();
  let json: unknown = undefined;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = text;
  }
  if (r.status >= 400) {
    const detail = (json as { detail?: string } | undefined)?.detail ?? (typeof json === 'string' && json ? json : r.statusText);
    // One line, whatever the server sent.
    throw new CliError(`${r.status} ${String(detail).replace(/\s+/g, ' ').trim().slice(0, 500)}`);
  }
  return { status: r.status, json };
}

/** A password from the environment variable named by `--password-env`, or from stdin. */
export async function readSecret(io: CliIo, opts: { passwordEnv?: string; passwordStdin?: boolean }): Promise<string | undefined> {
  if (opts.passwordEnv && opts.passwordStdin) throw new CliError('use one of --password-env and --password-stdin', 2);
  if (opts.passwordEnv) {
    const v = io.env[opts.passwordEnv];
    if (v === undefined) throw new CliError(`environment variable ${opts.passwordEnv} is not set`, 2);
    return v;
  }
  if (opts.passwordStdin) return (await io.readStdin()).replace(/\r?\n$/, '');
  return undefined;
}
