// Re-sealing the mirror's secrets (upstream and proxy passwords, webhook signing secrets) with the current
// MERIDIAN_SECRET_KEY: the mirror part of `meridian secrets rotate`. Run it while the old key is
// still in MERIDIAN_SECRET_KEY_PREVIOUS; afterwards the old key can be dropped.
import { and, eq, isNotNull, sql } from 'drizzle-orm';
import type { DbOrTx } from '../db/client.ts';
import { mirrorConfigs, webhookSubscriptions } from '../db/schema.ts';
import type { SecretBox } from '../security/secretbox.ts';
import { passwordContext } from './config.ts';
import { resealProxySettings, sealPlaintextProxyPasswords } from './proxy-secrets.ts';
import { secretContext } from './webhooks.ts';

export interface ResealResult {
  mirrorPasswords: number;
  /** Mirrors whose proxy passwords were re-sealed (or sealed: held in plain from before sealing). */
  proxyPasswords: number;
  webhookSecrets: number;
  /** Rows whose secret opens with no configured key (left as they are; re-enter them). */
  failed: string[];
}

export async function resealMirrorSecrets(db: DbOrTx, secrets: SecretBox): Promise<ResealResult> {
  const result: ResealResult = { mirrorPasswords: 0, proxyPasswords: 0, webhookSecrets: 0, failed: [] };
  const configs = await db
    .select({ id: mirrorConfigs.id, repositoryId: mirrorConfigs.repositoryId, enc: mirrorConfigs.passwordEnc })
    .from(mirrorConfigs)
    .where(isNotNull(mirrorConfigs.passwordEnc));
  for (const c of configs) {
    if (!c.enc || !secrets.needsRotation(c.enc)) continue;
    try {
      const plain = secrets.open(c.enc, passwordContext(c.repositoryId));
      await db.update(mirrorConfigs).set({ passwordEnc: secrets.seal(plain, passwordContext(c.repositoryId)) }).where(eq(mirrorConfigs.id, c.id));
      result.mirrorPasswords++;
    } catch {
      result.failed.push(`mirror_configs ${c.id}`);
    }
  }
  result.proxyPasswords += await sealStoredProxyPasswords(db, secrets);
  const proxied = await db.select({ id: mirrorConfigs.id, repositoryId: mirrorConfigs.repositoryId, proxy: mirrorConfigs.proxy }).from(mirrorConfigs).where(isNotNull(mirrorConfigs.proxy));
  for (const c of proxied) {
    try {
      const resealed = c.proxy && resealProxySettings(secrets, c.repositoryId, c.proxy);
      if (!resealed) continue;
      await db.update(mirrorConfigs).set({ proxy: resealed }).where(eq(mirrorConfigs.id, c.id));
      result.proxyPasswords++;
    } catch {
      result.failed.push(`mirror_configs ${c.id} proxy`);
    }
  }
  const subs = await db.select({ id: webhookSubscriptions.id, enc: webhookSubscriptions.secretEnc }).from(webhookSubscriptions);
  for (const s of subs) {
    if (!secrets.needsRotation(s.enc)) continue;
    try {
      const plain = secrets.open(s.enc, secretContext(s.id));
      await db.update(webhookSubscriptions).set({ secretEnc: secrets.seal(plain, secretContext(s.id)) }).where(eq(webhookSubscriptions.id, s.id));
      result.webhookSecrets++;
    } catch {
      result.failed.push(`webhook_subscriptions ${s.id}`);
    }
  }
  return result;
}

/** Seals the proxy passwords that mirrors saved before sealing still hold in plain inside their
 * proxy URLs (they stayed so until the mirror was saved again). Run at every API start and by
 * `meridian secrets rotate`: idempotent, and safe with several instances starting at once (a row
 * is written only if it is still as read). Returns how many mirrors it sealed. */
export async function sealStoredProxyPasswords(db: DbOrTx, secrets: SecretBox): Promise<number> {
  // Only rows with an "@" in a proxy URL can hold a password there.
  const rows = await db
    .select({ id: mirrorConfigs.id, repositoryId: mirrorConfigs.repositoryId, proxy: mirrorConfigs.proxy })
    .from(mirrorConfigs)
    .where(sql`${mirrorConfigs.proxy}->>'http_proxy' like '%@%' or ${mirrorConfigs.proxy}->>'https_proxy' like '%@%'`);
  let sealed = 0;
  for (const r of rows) {
    const next = r.proxy && sealPlaintextProxyPasswords(secrets, r.repositoryId, r.proxy);
    if (!next) continue;
    const done = await db
      .update(mirrorConfigs)
      .set({ proxy: next })
      .where(and(eq(mirrorConfigs.id, r.id), sql`${mirrorConfigs.proxy} = ${JSON.stringify(r.proxy)}::jsonb`))
      .returning({ id: mirrorConfigs.id });
    sealed += done.length;
  }
  return sealed;
}
