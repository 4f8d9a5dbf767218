// Housekeeping workflows run by Schedules.
import { TASK_QUEUES } from '../temporal.config.ts';
import { defineWorkflow } from './define.ts';

export interface ExpireUploadsInput {
  olderThanHours?: number;
}

export const expireUploadsWorkflow = defineWorkflow<(input?: ExpireUploadsInput) => Promise<number>>()('expireUploads', TASK_QUEUES.control);
