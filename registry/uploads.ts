// Blob uploads (OCI "push a blob"): sessions that collect bytes over one or many requests, then
// commit under the content-addressed key once the client names the digest.
//
// Bytes go straight to the session's storage location as S3 multipart parts; bytes that do not
// fill a part yet wait in a small side object (the "tail") until the next chunk. The digest is
// computed while the bytes stream and its state saved after every chunk, so any instance can
// continue the upload and nothing is read back to be hashed (except for a sha512 digest on an
// upload begun without saying so: we hash sha256 as we go, as the distribution registry does).//
// The parts: upload-sessions.ts (the session rows and their lease), upload-chunks.ts (bytes into
// parts and tail objects, PATCH), upload-commit.ts (verify and commit, PUT and monolithic POST).
// This module is their public face.
export { CHUNK_MIN_LENGTH, UPLOAD_TTL_HOURS, UploadError, type UploadSession, cancelUpload, getUpload, startUpload, tailKeysOf } from './upload-sessions.ts';
export { appendChunk, type ChunkInput } from './upload-chunks.ts';
export { type CommittedBlob, completeUpload, putBlob, putBlobToPreferred } from './upload-commit.ts';
export type { CompletedPart } from '../storage/driver.ts';
