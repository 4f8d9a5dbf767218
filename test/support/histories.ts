// Loads a history file written by `temporal workflow show --output json` (the canonical proto3
// JSON form) into the History message a replay worker takes.
//
// Why not the SDK's historyFromJSON: @temporalio/common and @temporalio/proto each get their own
// nested copy of protobufjs here (the top-level one is grpc's older major), and the former's
// fromJson rejects the latter's message types ("type must be a Type"). Parsing with the copy
// that defined the History type avoids the mismatch.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { temporal } from '@temporalio/proto';

type History = temporal.api.history.v1.IHistory;

const require = createRequire(import.meta.url);
const requireFromProto = createRequire(require.resolve('@temporalio/proto'));
const { fromJson } = requireFromProto('protobufjs/ext/protojson') as { fromJson: (type: unknown, json: unknown, opts?: object) => unknown };
const { patchProtobufRoot } = require('@temporalio/proto/lib/patch-protobuf-root') as { patchProtobufRoot: (root: unknown) => { lookupType(name: string): unknown } };
const historyType = patchProtobufRoot(require('@temporalio/proto')).lookupType('temporal.api.history.v1.History');

export function parseHistoryJson(json: unknown): History {
  return fromJson(historyType, json, { ignoreUnknownFields: true }) as History;
}

export function readHistoryFile(file: string): History {
  return parseHistoryJson(JSON.parse(readFileSync(file, 'utf8')));
}
