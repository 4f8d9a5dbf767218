// The one router of api/: every endpoint (/v2, /v2/auth, /api/v1, /health, /metrics) is a row
// of a route table — method, path, zod schemas for its path parameters, query and body, an access
// step and a handler — and each API gives the table an error renderer (OCI errors on /v2,
// problem details on /api/v1).
//
// Paths use path-to-regexp's syntax (the matcher @koa/router is built on): `:param` is one
// segment, `*name` one or more segments, which repository names need (`org/team/app`). We do not
// use @koa/router's dispatch because a repository name may end in any suffix the API itself uses
// (`…/mirror`, `…/tags/list`, `…/permissions/user/x`): @koa/router runs every matching route in
// registration order and answers 405 only when no route matched the path at all, so `GET
// …/mirror/sync-now` would reach the repository route, and correctness would hang on the order
// tables are mounted in. Here the most specific match wins (most literal characters, as
// werkzeug does for Quay), whatever the order, and a path matched only with another method
// answers 405 with `Allow`.
//
// Hostile input is handled here once: path parameters are URI-decoded with a 400 for malformed
// escapes, control characters (NUL included) are refused in every parameter, JSON bodies are
// bounded in bytes and nesting before they are parsed, and the schemas run before the handler.
import type Koa from 'koa';
import { pathToRegexp } from 'path-to-regexp';
import type { z } from 'zod';

export type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** Bad input, found at the edge: where (path, query, body, header), which field, and why. */
export class InputError extends Error {
  constructor(
    readonly part: 'path' | 'query' | 'body' | 'header',
    readonly field: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
    this.name = 'InputError';
  }
}

/** The path exists, not with this method. */
export class MethodNotAllowedError extends Error {
  constructor(
    readonly method: string,
    readonly allowed: string[],
  ) {
    super(`${method} is not supported here`);
    this.name = 'MethodNotAllowedError';
  }
}

/** No route matches the path. */
export class RouteNotFoundError extends Error {
  constructor() {
    super('not found');
    this.name = 'RouteNotFoundError';
  }
}

export interface RouteInput<P, Q, A, B> {
  params: P;
  query: Q;
  /** What the route's access step returned (the caller, the repository it looked up…). */
  access: A;
  body: B;
}

export interface RouteSpec<P, Q, A, B> {
  method: Method;
  /** path-to-regexp syntax: `/api/v1/repository/*repository/mirror`, `/v2/*name/blobs/:digest`. */
  path: string;
  params?: z.ZodType<P>;
  query?: z.ZodType<Q>;
  /** Runs after params and query are valid and before the body is read, so a caller who may not
   * use the route learns that (401/403/404) rather than what is wrong with a body. */
  access?: (ctx: Koa.Context, input: { params: P; query: Q }) => Promise<A>;
  /** A JSON body (read whole, bounded); routes that stream their body leave this out. */
  body?: z.ZodType<B>;
  /** Or an application/x-www-form-urlencoded body (repeated fields become lists). */
  form?: z.ZodType<B>;
  /** Largest JSON body accepted, bytes (default 64 KiB). */
  maxBody?: number;
  handler: (ctx: Koa.Context, input: RouteInput<P, Q, A, B>) => Promise<void> | void;
}

/** A route with its types erased, for tables. */
export type Route = RouteSpec<unknown, unknown, unknown, unknown>;

/** Declares a route; the schemas' output types flow into the handler. */
export function route<P = Record<string, never>, Q = Record<string, never>, A = undefined, B = undefined>(spec: RouteSpec<P, Q, A, B>): Route {
  return spec as unknown as Route;
}

export interface RouterOptions {
  /** Turns anything a route throws (InputError, MethodNotAllowedError, RouteNotFoundError, domain
   * errors) into this API's error answer. */
  errors: (ctx: Koa.Context, e: unknown) => void;
  /** Paths this router owns; others pass to the next middleware. */
  prefix: string;
  /** Whether a path with a trailing slash matches the route without it (Quay's API: yes). */
  trailingSlash?: boolean;
}

interface Compiled {
  path: string;
  regexp: RegExp;
  keys: string[];
  /** Literal characters: the more, the more specific. */
  specificity: number;
  methods: Map<string, Route>;
}

const DEFAULT_MAX_BODY = 64 * 1024;
const MAX_JSON_DEPTH = 32;
// C0 controls and DEL: never part of a name, tag, digest or id, and NUL breaks PostgreSQL.
const CONTROL = /[\u0000-\u001f\u007f]/;

function compile(routes: Route[]): Compiled[] {
  const byPath = new Map<string, Compiled>();
  for (const r of routes) {
    let c = byPath.get(r.path);
    if (!c) {
      const { regexp, keys } = pathToRegexp(r.path, { sensitive: true, trailing: false });
      const literal = r.path.replace(/[:*][A-Za-z_$][\w$]*/g, '').replace(/[{}]/g, '');
      c = { path: r.path, regexp, keys: keys.map((k) => k.name), specificity: literal.length, methods: new Map() };
      byPath.set(r.path, c);
    }
    if (c.methods.has(r.method)) throw new Error(`route ${r.method} ${r.path} is declared twice`);
    c.methods.set(r.method, r);
  }
  // Most specific first; declaration order breaks ties.
  return [...byPath.values()].sort((a, b) => b.specificity - a.specificity);
}

/** Decodes one captured path parameter; malformed escapes and control characters are a 400. */
function decodeParam(name: string, raw: string): string {
  let value: string;
  try {
    value = decodeURIComponent(raw);
  } catch {
    throw new InputError('path', name, `${name}: malformed percent-encoding in the path`);
  }
  if (CONTROL.test(value)) throw new InputError('path', name, `${name} must not contain control characters`);
  return value;
}

function firstIssue(part: InputError['part'], issues: z.core.$ZodIssue[]): InputError {
  const issue = issues[0]!;
  const field = issue.path.map(String).join('.');
  // Our schemas give messages that name their field; zod's own defaults do not.
  const message = field && !issue.message.includes(field) ? `${field}: ${issue.message}` : issue.message;
  return new InputError(part, field, message);
}

function validate<T>(part: InputError['part'], schema: z.ZodType<T> | undefined, value: unknown): T {
  if (!schema) return {} as T;
  const r = schema.safeParse(value);
  if (!r.success) throw firstIssue(part, r.error.issues);
  return r.data;
}

/** Whether JSON text nests deeper than `max` (scanned before parsing, so a 10,000-level document
 * never reaches the recursive parser or anything that walks the result). */
export function jsonTooDeep(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92 /* \ */) i++;
      else if (c === 34 /* " */) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 || c === 91 /* { [ */) {
      if (++depth > max) return true;
    } else if (c === 125 || c === 93) depth--;
  }
  return false;
}

/** Refuses NUL in any string or key of a parsed JSON value (PostgreSQL cannot store it). */
function refuseNul(v: unknown, path: string): void {
  if (typeof v === 'string') {
    if (v.includes('\u0000')) throw new InputError('body', path, `${path || 'body'} must not contain NUL characters`);
  } else if (Array.isArray(v)) {
    v.forEach((x, i) => refuseNul(x, `${path}[${i}]`));
  } else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      if (k.includes('\u0000')) throw new InputError('body', path, `${path || 'body'} has a key containing NUL`);
      refuseNul(x, path ? `${path}.${k}` : k);
    }
  }
}

/** Reads a JSON request body: at most `limit` bytes and MAX_JSON_DEPTH levels; empty is `{}`. */
export async function readJson(ctx: Koa.Context, limit = DEFAULT_MAX_BODY): Promise<unknown> {
  const text = (await readBytes(ctx, limit)).toString('utf8').trim();
  if (text === '') return {};
  if (jsonTooDeep(text, MAX_JSON_DEPTH)) throw new InputError('body', '', `the request body nests deeper than ${MAX_JSON_DEPTH} levels`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new InputError('body', '', 'the request body is not valid JSON');
  }
  refuseNul(value, '');
  return value;
}

async function readBytes(ctx: Koa.Context, limit: number): Promise<Buffer> {
  const declared = ctx.get('Content-Length');
  if (declared !== '' && Number(declared) > limit) {
    ctx.req.resume();
    throw new InputError('body', '', `request body larger than ${limit} bytes`, 413);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of ctx.req) {
    size += (c as Buffer).length;
    if (size > limit) {
      ctx.req.resume();
      throw new InputError('body', '', `request body larger than ${limit} bytes`, 413);
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Reads a form body into an object; a field given more than once becomes a list. */
export async function readForm(ctx: Koa.Context, limit: number): Promise<Record<string, string | string[]>> {
  const form = new URLSearchParams((await readBytes(ctx, limit)).toString('utf8'));
  const out: Record<string, string | string[]> = {};
  for (const k of new Set(form.keys())) {
    const all = form.getAll(k);
    out[k] = all.length === 1 ? all[0]! : all;
  }
  return out;
}

/** The client went away (or its request timed out) while we read its body: nobody to answer,
 * nothing to log as a failure. */
export function isClientAbort(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException)?.code;
  return code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ERR_HTTP_REQUEST_TIMEOUT' || (e as Error)?.message === 'aborted';
}

/**
 * The route for a path and method. Candidates are the routes whose pattern matches, most specific
 * first; a candidate counts only when its path parameters are valid, so `alice/mirror` (a
 * repository named `mirror`) falls through `…/*repository/mirror` (where `alice` alone is no
 * repository) to `…/*repository`. The first valid candidate decides: its handler for the method,
 * or 405 listing the methods it has. When no candidate's parameters are valid, the most specific
 * one's complaint is the answer.
 */
function select(table: Compiled[], path: string, method: string): { r: Route; params: unknown } {
  let firstError: unknown;
  for (const c of table) {
    const m = c.regexp.exec(path);
    if (!m) continue;
    const r = c.methods.get(method) ?? (method === 'HEAD' ? c.methods.get('GET') : undefined);
    let params: unknown;
    try {
      const raw: Record<string, string> = {};
      c.keys.forEach((k, i) => {
        if (m[i + 1] !== undefined) raw[k] = decodeParam(k, m[i + 1]!);
      });
      params = validate('path', (r ?? c.methods.values().next().value!).params, raw);
    } catch (e) {
      firstError ??= e;
      continue;
    }
    if (!r) {
      const allowed = [...c.methods.keys()];
      if (allowed.includes('GET') && !allowed.includes('HEAD')) allowed.push('HEAD');
      throw new MethodNotAllowedError(method, allowed);
    }
    return { r, params };
  }
  throw firstError ?? new RouteNotFoundError();
}

/** The middleware serving a route table. */
export function router(routes: Route[], opts: RouterOptions): Koa.Middleware {
  const table = compile(routes);
  const prefix = opts.prefix;
  return async (ctx, next) => {
    if (ctx.path !== prefix && !ctx.path.startsWith(prefix.endsWith('/') ? prefix : `${prefix}/`)) return next();
    // One trailing slash is dropped before matching (not matched by the route), so that a
    // wildcard never swallows it into a repository name.
    const path = opts.trailingSlash && ctx.path.length > 1 && ctx.path.endsWith('/') ? ctx.path.slice(0, -1) : ctx.path;
    try {
      const { r, params } = select(table, path, ctx.method);
      const query = validate('query', r.query, ctx.query);
      const access = r.access ? await r.access(ctx, { params, query }) : undefined;
      const body = r.body
        ? validate('body', r.body, await readJson(ctx, r.maxBody))
        : r.form
          ? validate('body', r.form, await readForm(ctx, r.maxBody ?? 16 * 1024))
          : undefined;
      await r.handler(ctx, { params, query, access, body });
    } catch (e) {
      if (e instanceof MethodNotAllowedError) ctx.set('Allow', e.allowed.join(', '));
      opts.errors(ctx, e);
    }
  };
}
