// The copy engine over a batch: copies each of a set of blobs into one location (copyBlob, a few
// at a time) for replicateBlobs, so one activity carries what would otherwise be one activity per
// blob. Its checkpoint keeps each unfinished multipart copy's own checkpoint, so a retry resumes
// every one of them; blobs copied before are found present at once.
import type { CopyBatchInput, CopyBatchResult } from '../contract/replication.ts';
import { type CopyCheckpoint, type CopyDeps, copyBlob } from './copy.ts';
import { copyFailure } from './errors.ts';

/** What a batch reports as it goes: the checkpoint of each copy with an upload worth resuming. */
export interface CopyBatchCheckpoint {
  copies: Record<string, CopyCheckpoint>;
}

export interface CopyBatchControl {
  checkpoint?: CopyBatchCheckpoint;
  heartbeat(checkpoint: CopyBatchCheckpoint): void;
  signal: AbortSignal;
}

/** Blobs of a batch copied at once (a copy worker runs a few activities side by side too). */
const COPIES_AT_ONCE = 4;

/**
 * Copies every blob of `input` into `input.target`. A blob no retry can copy (no good source, gone)
 * is reported in `failed` and the rest go on; a retryable failure (the target or every source
 * down) is thrown once the copies under way have settled, and the activity's retry starts over.
 */
export async function copyBlobBatch(d: CopyDeps, input: CopyBatchInput, control: CopyBatchControl): Promise<CopyBatchResult> {
  const copies: Record<string, CopyCheckpoint> = { ...(control.checkpoint?.copies ?? {}) };
  const result: CopyBatchResult = { target: input.target, copied: 0, alreadyPresent: 0, bytesTransferred: 0, failed: [] };
  let retryable: unknown;
  let next = 0;
  const worker = async () => {
    while (retryable === undefined && next < input.blobs.length) {
      const blob = input.blobs[next++]!;
      try {
        const r = await copyBlob(
          d,
          { digest: blob.digest, size: blob.size, target: input.target },
          {
            checkpoint: copies[blob.digest],
            heartbeat: (checkpoint) => {
              if (checkpoint) copies[blob.digest] = checkpoint;
              else delete copies[blob.digest];
              control.heartbeat({ copies });
            },
            signal: control.signal,
          },
        );
        if (r.alreadyPresent) result.alreadyPresent++;
        else result.copied++;
        result.bytesTransferred += r.bytesTransferred;
        delete copies[blob.digest];
      } catch (e) {
        const f = copyFailure(e);
        // A retryable failure keeps the copy's checkpoint: the retry resumes its upload.
        if (f.retryable) retryable ??= e;
        else {
          result.failed.push({ digest: blob.digest, reason: f.reason });
          delete copies[blob.digest];
        }
      }
      control.heartbeat({ copies });
    }
  };
  await Promise.all(Array.from({ length: Math.min(COPIES_AT_ONCE, input.blobs.length) }, worker));
  if (retryable !== undefined) throw retryable;
  return result;
}
