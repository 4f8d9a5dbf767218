// Paginated listings: tags of a repository, and the catalog of repositories.
import type Koa from 'koa';
import type { Principal } from '../../auth/principal.ts';
import { catalogRepositories } from '../../auth/v2-access.ts';
import { listTags } from '../../registry/manifests.ts';
import type { Services } from '../../platform/services.ts';
import { OciError } from './errors.ts';
import type { V2Request } from './routes.ts';

/** Without `n`, a listing returns up to this many entries (with a Link to the rest). */
const DEFAULT_PAGE = 1000;
const MAX_PAGE = 10_000;

function pageParams(ctx: Koa.Context): { n: number; last?: string } {
  const rawN = ctx.query.n;
  const rawLast = ctx.query.last;
  let n = DEFAULT_PAGE;
  if (rawN !== undefined) {
    if (typeof rawN !== 'string' || !/^\d+$/.test(rawN)) throw new OciError('UNSUPPORTED', 'n must be a non-negative integer', undefined, 400);
    n = Math.min(Number(rawN), MAX_PAGE);
  }
  const last = typeof rawLast === 'string' && rawLast !== '' ? rawLast : undefined;
  return { n, last };
}

/** Fetches one more than asked to know whether a next page exists. */
async function paginate(
  ctx: Koa.Context,
  basePath: string,
  fetch: (opts: { last?: string; limit: number }) => Promise<string[]>,
): Promise<string[]> {
  const { n, last } = pageParams(ctx);
  if (n === 0) return [];
  const rows = await fetch({ last, limit: n + 1 });
  const page = rows.slice(0, n);
  if (rows.length > n) {
    const params = new URLSearchParams({ n: String(n), last: page[page.length - 1]! });
    ctx.set('Link', `<${basePath}?${params.toString()}>; rel="next"`);
  }
  return page;
}

export async function tagList(r: V2Request): Promise<void> {
  const tags = await paginate(r.ctx, `/v2/${r.name}/tags/list`, (opts) => listTags(r.s.db, r.repo.id, opts));
  r.ctx.status = 200;
  r.ctx.body = { name: r.name, tags };
}

export async function catalog(s: Services, ctx: Koa.Context, principal: Principal): Promise<void> {
  const repositories = await paginate(ctx, '/v2/_catalog', (opts) => catalogRepositories(s, principal, opts));
  ctx.status = 200;
  ctx.body = { repositories };
}
