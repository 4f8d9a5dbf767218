// expireUploads: started every hour by the `maintenance/expire-uploads` schedule (created by the
// control worker). Uploads abandoned by their clients would otherwise keep multipart parts in
// storage forever.
import { proxyActivities } from '@temporalio/workflow';
import type * as activities from '../activities/maintenance.ts';
import type { ExpireUploadsInput } from '../contract/maintenance.ts';

type Activities = ReturnType<typeof activities.createMaintenanceActivities>;

const { expireUploadSessions } = proxyActivities<Activities>({ startToCloseTimeout: '10 minutes', retry: { maximumAttempts: 5 } });

export async function expireUploads(input: ExpireUploadsInput = {}): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await expireUploadSessions({ olderThanHours: input.olderThanHours ?? 24, limit: 500 });
    total += n;
    if (n < 500) return total;
  }
}
