// Repository notifications (Quay's /api/v1/repository/<repo>/notification/) for the mirror
// events, delivered as signed webhooks.
//
// Each subscription has its own signing secret, generated at creation, shown once in the
// creation response and stored sealed with MERIDIAN_SECRET_KEY. A delivery carries
//   X-Meridian-Event:      repo_mirror_sync_failed
//   X-Meridian-Delivery:   a uuid, the same on every retry of one delivery (dedupe on it)
//   X-Meridian-Timestamp:  unix seconds when this attempt was signed
//   X-Meridian-Signature:  sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>
// A receiver recomputes the HMAC over the timestamp and the raw body bytes, compares in constant
// time, and refuses timestamps older than a few minutes, so a captured delivery cannot be replayed.
import { createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { and, eq, inArray } from 'drizzle-orm';
import { request } from 'undici';
import { MIRROR_EVENTS, type MirrorEvent } from '../contract/mirror.ts';
import type { DbOrTx } from '../db/client.ts';
import { DomainError } from '../platform/errors.ts';
import { webhookSubscriptions } from '../db/schema.ts';
import type { Repository } from '../registry/repositories.ts';
import type { SecretBox } from '../security/secretbox.ts';
import { checkedAgent, EgressRefused } from '../security/egress.ts';
import { ReferenceError, type UpstreamHostPolicy } from './reference.ts';

export { MIRROR_EVENTS, type MirrorEvent };

export type SubscriptionRow = typeof webhookSubscriptions.$inferSelect;

export class NotificationError extends DomainError {}

/** Quay's notification view. */
export interface NotificationView {
  uuid: string;
  title: string;
  event: string;
  method: string;
  config: { url: string };
  event_config: Record<string, unknown>;
  number_of_failures: number;
}

export function secretContext(id: string): string {
  return `webhook_subscriptions:${id}:secret`;
}

export function notificationView(r: SubscriptionRow): NotificationView {
  return { uuid: r.id, title: r.title, event: r.event, method: r.method, config: { url: r.url }, event_config: {}, number_of_failures: 0 };
}

/** Quay's create body ({event, method, config: {url}, title?}), its shape checked by the route's
 * schema (api/v1/notifications.ts). */
export interface SubscriptionBody {
  event: string;
  method: string;
  config: { url: string };
  title?: string | null;
}

/** What the body means: a mirror event, the webhook method, a URL the egress policy allows. */
export function parseSubscription(body: SubscriptionBody, policy: UpstreamHostPolicy): { event: MirrorEvent; url: string; title: string } {
  const { event, method, config, title } = body;
  if (!(MIRROR_EVENTS as readonly string[]).includes(event)) {
    throw new NotificationError('invalid', `event must be one of ${MIRROR_EVENTS.join(', ')}`);
  }
  if (method !== 'webhook') throw new NotificationError('invalid', 'method must be "webhook" (the only notification method Meridian delivers)');
  let url: URL;
  try {
    url = new URL(config.url);
  } catch {
    throw new NotificationError('invalid', 'config.url is not a valid URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new NotificationError('invalid', 'config.url must be an http:// or https:// URL');
  if (url.username || url.password) throw new NotificationError('invalid', 'config.url must not contain credentials');
  try {
    policy.checkHost(url.hostname.replace(/^\[|\]$/g, ''));
  } catch (e) {
    if (e instanceof ReferenceError || e instanceof EgressRefused) throw new NotificationError('invalid', e.message.replace('external_reference', 'config.url'));
    throw e;
  }
  return { event: event as MirrorEvent, url: url.toString(), title: title ?? '' };
}

/** Creates a subscription; the signing secret is returned here and never again. */
export async function createSubscription(
  d: { db: DbOrTx; secrets: SecretBox; policy: UpstreamHostPolicy },
  repo: Repository,
  body: SubscriptionBody,
): Promise<{ row: SubscriptionRow; secret: string }> {
  const input = parseSubscription(body, d.policy);
  const id = randomUUID();
  const secret = `mwhsec_${randomBytes(32).toString('base64url')}`;
  const [row] = await d.db
    .insert(webhookSubscriptions)
    .values({ id, repositoryId: repo.id, event: input.event, method: 'webhook', title: input.title, url: input.url, secretEnc: d.secrets.seal(secret, secretContext(id)) })
    .returning();
  return { row: row!, secret };
}

export async function listSubscriptions(db: DbOrTx, repositoryId: number, event?: string): Promise<SubscriptionRow[]> {
  return db
    .select()
    .from(webhookSubscriptions)
    .where(and(eq(webhookSubscriptions.repositoryId, repositoryId), event ? eq(webhookSubscriptions.event, event) : undefined))
    .orderBy(webhookSubscriptions.createdAt);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export async function getSubscription(db: DbOrTx, repositoryId: number, id: string): Promise<SubscriptionRow> {
  const [row] = UUID.test(id)
    ? await db.select().from(webhookSubscriptions).where(and(eq(webhookSubscriptions.repositoryId, repositoryId), eq(webhookSubscriptions.id, id)))
    : [];
  if (!row) throw new NotificationError('not_found', `notification ${id} not found`);
  return row;
}

export async function deleteSubscription(db: DbOrTx, repositoryId: number, id: string): Promise<void> {
  await getSubscription(db, repositoryId, id);
  await db.delete(webhookSubscriptions).where(and(eq(webhookSubscriptions.repositoryId, repositoryId), eq(webhookSubscriptions.id, id)));
}

// ------------------------------------------------------------------ signing and delivery

export const SIGNATURE_HEADER = 'x-meridian-signature';
export const TIMESTAMP_HEADER = 'x-meridian-timestamp';
export const EVENT_HEADER = 'x-meridian-event';
export const DELIVERY_HEADER = 'x-meridian-delivery';

export function signBody(secret: string, timestamp: number, body: string | Buffer): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex')}`;
}

/** What a receiver does (and what the tests do): true when the signature is valid and fresh. */
export function verifySignature(secret: string, headers: { signature?: string; timestamp?: string }, body: Buffer | string, opts: { toleranceSeconds?: number; now?: number } = {}): boolean {
  const ts = Number(headers.timestamp);
  if (!headers.signature || !Number.isInteger(ts)) return false;
  const now = Math.floor((opts.now ?? Date.now()) / 1000);
  if (Math.abs(now - ts) > (opts.toleranceSeconds ?? 300)) return false;
  const expected = Buffer.from(signBody(secret, ts, body));
  const given = Buffer.from(headers.signature);
  return expected.length === given.length && timingSafeEqual(expected, given);
}

export class DeliveryError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
    this.name = 'DeliveryError';
  }
}

/** One attempt at one delivery. Throws DeliveryError on anything but a 2xx. */
export async function deliver(
  d: { db: DbOrTx; secrets: SecretBox; policy: UpstreamHostPolicy },
  input: { subscriptionId: string; event: string; deliveryId: string; payload: unknown },
  signal?: AbortSignal,
): Promise<{ status: number } | { skipped: string }> {
  const [sub] = await d.db.select().from(webhookSubscriptions).where(inArray(webhookSubscriptions.id, [input.subscriptionId]));
  if (!sub) return { skipped: 'the subscription was deleted' };
  const secret = d.secrets.open(sub.secretEnc, secretContext(sub.id));
  const body = JSON.stringify(input.payload);
  const timestamp = Math.floor(Date.now() / 1000);
  const url = new URL(sub.url);
  try {
    d.policy.checkHost(url.hostname.replace(/^\[|\]$/g, ''));
  } catch (e) {
    throw new DeliveryError((e as Error).message, false);
  }
  const agent = checkedAgent(d.policy);
  try {
    const r = await request(url, {
      method: 'POST',
      dispatcher: agent,
      signal,
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
      headers: {
        'content-type': 'application/json',
        'user-agent': 'meridian-webhook',
        [EVENT_HEADER]: input.event,
        [DELIVERY_HEADER]: input.deliveryId,
        [TIMESTAMP_HEADER]: String(timestamp),
        [SIGNATURE_HEADER]: signBody(secret, timestamp, body),
      },
      body,
    });
    await r.body.dump();
    if (r.statusCode >= 200 && r.statusCode < 300) return { status: r.statusCode };
    // A receiver that refuses the request (4xx) will refuse it again, except for these.
    const retryable = r.statusCode >= 500 || r.statusCode === 408 || r.statusCode === 429;
    throw new DeliveryError(`${url.origin} answered ${r.statusCode}`, retryable);
  } catch (e) {
    if (e instanceof DeliveryError) throw e;
    throw new DeliveryError(`${url.origin}: ${(e as Error).message}`, true);
  } finally {
    await agent.close().catch(() => {});
  }
}
