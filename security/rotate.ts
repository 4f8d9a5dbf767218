// `meridian secrets rotate`: re-seals every secret at rest with the current MERIDIAN_SECRET_KEY —
// stored location credentials, mirror upstream and proxy passwords, webhook signing secrets. Run it while
// the old key is in MERIDIAN_SECRET_KEY_PREVIOUS; then the old key can be dropped.
import { eq, isNotNull } from 'drizzle-orm';
import { storageLocations } from '../db/schema.ts';
import { resealMirrorSecrets } from '../mirror/secrets.ts';
import type { Services } from '../platform/services.ts';
import { sealContext } from '../storage/locations.ts';

export interface RotationResult {
  locationCredentials: number;
  mirrorPasswords: number;
  proxyPasswords: number;
  webhookSecrets: number;
  /** Secrets no configured key opens: left as they are, to be entered again. */
  failed: string[];
}

export async function rotateSecrets(s: Services): Promise<RotationResult> {
  let locationCredentials = 0;
  const failed: string[] = [];
  const rows = await s.db.select().from(storageLocations).where(isNotNull(storageLocations.secretKeyEnc));
  for (const row of rows) {
    if (!row.accessKeyEnc || !row.secretKeyEnc) continue;
    if (!s.secrets.needsRotation(row.accessKeyEnc) && !s.secrets.needsRotation(row.secretKeyEnc)) continue;
    try {
      const access = s.secrets.open(row.accessKeyEnc, sealContext(row.name, 'access'));
      const secret = s.secrets.open(row.secretKeyEnc, sealContext(row.name, 'secret'));
      await s.db
        .update(storageLocations)
        .set({ accessKeyEnc: s.secrets.seal(access, sealContext(row.name, 'access')), secretKeyEnc: s.secrets.seal(secret, sealContext(row.name, 'secret')) })
        .where(eq(storageLocations.id, row.id));
      locationCredentials++;
    } catch {
      failed.push(`storage_locations ${row.name}`);
    }
  }
  const mirror = await resealMirrorSecrets(s.db, s.secrets);
  return { locationCredentials, mirrorPasswords: mirror.mirrorPasswords, proxyPasswords: mirror.proxyPasswords, webhookSecrets: mirror.webhookSecrets, failed: [...failed, ...mirror.failed] };
}
