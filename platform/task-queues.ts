// Who polls Meridian's copy queues, as Temporal sees it (DescribeTaskQueue): a region whose copy
// workers are all gone leaves its copies waiting without a single failure, so /metrics shows
// meridian_copy_queue_pollers per location and an alert on 0 catches it from any API instance.
import type { Client } from '@temporalio/client';
import { copyTaskQueue } from '../temporal.config.ts';

// temporal.api.enums.v1: TaskQueueKind.NORMAL, TaskQueueType.ACTIVITY.
const TASK_QUEUE_KIND_NORMAL = 1;
const TASK_QUEUE_TYPE_ACTIVITY = 2;

/** Pollers of each location's copy queue seen by Temporal in the last minutes; a location whose
 * queue cannot be described (Temporal unreachable within the deadline) is left out. */
export async function copyQueuePollers(client: Client, locations: string[], deadlineMs = 2000): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  await Promise.all(
    locations.map(async (location) => {
      try {
        const r = await client.connection.withDeadline(Date.now() + deadlineMs, () =>
          client.workflowService.describeTaskQueue({
            namespace: client.options.namespace,
            taskQueue: { name: copyTaskQueue(location), kind: TASK_QUEUE_KIND_NORMAL },
            taskQueueType: TASK_QUEUE_TYPE_ACTIVITY,
          }),
        );
        out.set(location, r.pollers?.length ?? 0);
      } catch {
        // Unknown rather than 0: an unreachable Temporal is not an unpolled queue.
      }
    }),
  );
  return out;
}
