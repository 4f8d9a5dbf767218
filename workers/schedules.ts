// Schedules the control worker makes sure exist when it starts (idempotent).
import { type Client, ScheduleAlreadyRunning, ScheduleOverlapPolicy } from '@temporalio/client';
import { TASK_QUEUES, WORKFLOW_IDS } from '../temporal.config.ts';

export async function ensureMaintenanceSchedules(client: Client): Promise<void> {
  try {
    await client.schedule.create({
      scheduleId: WORKFLOW_IDS.expireUploadsSchedule,
      spec: { intervals: [{ every: '1 hour' }] },
      action: { type: 'startWorkflow', workflowType: 'expireUploads', taskQueue: TASK_QUEUES.control, args: [{}] },
      policies: { overlap: ScheduleOverlapPolicy.SKIP },
      state: { note: 'Ends upload sessions abandoned for 24 hours and deletes their partial objects.' },
    });
  } catch (e) {
    if (!(e instanceof ScheduleAlreadyRunning)) throw e;
  }
}
