// Housekeeping activities run on a Temporal Schedule.
import { lt, sql } from 'drizzle-orm';
import { uploadSessions } from '../db/schema.ts';
import type { Services } from '../platform/services.ts';
import { tailKeysOf } from '../registry/uploads.ts';

export function createMaintenanceActivities(s: Services) {
  return {
    /** Ends upload sessions untouched for `olderThanHours`: aborts their multipart uploads and
     * deletes their partial objects. Returns how many it ended (at most `limit`). */
    async expireUploadSessions(input: { olderThanHours: number; limit: number }): Promise<number> {
      await s.locations.fresh();
      const stale = await s.db
        .select()
        .from(uploadSessions)
        .where(lt(uploadSessions.updatedAt, sql`now() - make_interval(hours => ${input.olderThanHours})`))
        .limit(input.limit);
      for (const session of stale) {
        const loc = s.locations.get(session.locationId);
        if (loc) {
          if (session.multipartUploadId) await loc.driver.abortMultipart(session.objectKey, session.multipartUploadId).catch(() => {});
          await loc.driver.deleteMany([session.objectKey, ...tailKeysOf(session)]).catch(() => {});
        }
        await s.db.delete(uploadSessions).where(sql`${uploadSessions.id} = ${session.id}`);
      }
      if (stale.length > 0) s.logger.info({ count: stale.length }, 'expired abandoned upload sessions');
      return stale.length;
    },
  };
}
