// Worker processes. `control` runs every workflow, the activities that only touch the database,
// and the outbox relay; `copy` workers run the copy activities of the locations they are given, on
// those locations' task queues (in production, one per region, next to its storage).
import { DefaultLogger, NativeConnection, Worker, type WorkflowBundleOption, Runtime, makeTelemetryFilterString } from '@temporalio/worker';
import { createActivities } from '../activities/index.ts';
import { loadConfig, type Config } from '../config.ts';
import { runMain } from '../platform/main.ts';
import { startHealthProber } from '../platform/health-prober.ts';
import { OutboxRelay } from '../platform/outbox.ts';
import { createServices, type Services } from '../platform/services.ts';
import { redactingInterceptors } from '../security/failure-redaction.ts';
import { temporalConnectOptions } from '../platform/temporal.ts';
import { copyTaskQueue, TASK_QUEUES } from '../temporal.config.ts';
import { workflowSource } from './bundle.ts';

export interface WorkerOptions {
  /** Run the control worker (workflows, database activities, outbox relay). */
  control: boolean;
  /** Locations whose copy queue this process serves. */
  copyLocations: string[];
  /** Run the mirror worker. */
  mirror: boolean;
  workflowBundle?: WorkflowBundleOption;
}

export interface RunningWorkers {
  services: Services;
  workers: Worker[];
  relay: OutboxRelay | undefined;
  stop(): Promise<void>;
}

let runtimeInstalled = false;
/** The SDK logs every worker state change at INFO; we keep its warnings and errors. With a
 * metrics address, the SDK's own metrics (schedule-to-start latency per task queue, slots,
 * poll failures) are served there for Prometheus. One runtime per process: the first call wins. */
export function installRuntime(level: string, metricsAddress?: string): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  const debug = level === 'debug' || level === 'trace';
  try {
    Runtime.install({
      // The SDK logs every failed activity attempt at WARN; at LOG_LEVEL=warn and above only
      // errors (ours are logged by the activities themselves).
      logger: new DefaultLogger(debug ? 'DEBUG' : level === 'info' ? 'WARN' : 'ERROR'),
      // The core warns on every retried poll while Temporal is unreachable; at LOG_LEVEL=warn
      // and above we keep only its errors.
      telemetryOptions: {
        logging: { filter: makeTelemetryFilterString({ core: debug ? 'INFO' : level === 'info' ? 'WARN' : 'ERROR' }) },
        ...(metricsAddress ? { metrics: { prometheus: { bindAddress: metricsAddress, useSecondsForDurations: true } } } : {}),
      },
    });
  } catch {
    // Already installed in this process; keep it.
  }
}

export async function startWorkers(config: Config, opts: WorkerOptions, services?: Services): Promise<RunningWorkers> {
  installRuntime(config.logLevel, config.workerMetricsAddress);
  const s = services ?? createServices(config, 'worker');
  await s.locations.refresh();
  const namespace = config.temporal.namespace;
  const connection = await NativeConnection.connect(temporalConnectOptions(config.temporal));
  const activities = createActivities(s);
  // SIGTERM lets in-flight activities finish (up to the grace) instead of cancelling them at once.
  const shutdownGraceTime = config.workerShutdownGraceSeconds * 1000;
  // Activity and workflow failures are recorded in Temporal's history: no URL tokens, passwords or
  // SQL parameters (workflow failures: workflows/failure-redaction.ts, in the bundle).
  const interceptors = redactingInterceptors;
  const workers: Worker[] = [];
  if (opts.control) {
    const { workflowModules, ...workflows } = { workflowModules: undefined, ...workflowSource(opts.workflowBundle, config.workflowBundlePath) };
    // A bundle carries its workflow interceptors; sources bundled here get them from the worker.
    const withWorkflowModules = workflowModules ? { ...interceptors, workflowModules } : interceptors;
    workers.push(await Worker.create({ connection, namespace, taskQueue: TASK_QUEUES.control, activities, shutdownGraceTime, interceptors: withWorkflowModules, ...workflows }));
  }
  if (opts.mirror) {
    workers.push(
      await Worker.create({
        connection,
        namespace,
        taskQueue: TASK_QUEUES.mirror,
        activities,
        shutdownGraceTime,
        interceptors,
        // Syncs heartbeat every few seconds; a cancel (sync-cancel) reaches a copy that quickly.
        defaultHeartbeatThrottleInterval: '2 seconds',
        maxHeartbeatThrottleInterval: '5 seconds',
      }),
    );
  }
  for (const loc of opts.copyLocations) {
    workers.push(
      await Worker.create({
        connection,
        namespace,
        taskQueue: copyTaskQueue(loc),
        activities,
        shutdownGraceTime,
        interceptors,
        maxConcurrentActivityTaskExecutions: 8,
        // Copies checkpoint at every part; send those checkpoints promptly so a crash loses little.
        defaultHeartbeatThrottleInterval: '1 second',
        maxHeartbeatThrottleInterval: '2 seconds',
      }),
    );
  }
  const relay = opts.control ? new OutboxRelay(s.db, s.sql, s.temporal.client, s.logger) : undefined;
  await relay?.start();
  const prober = opts.control ? startHealthProber(s) : undefined;
  const runs = workers.map((w) =>
    w.run().catch((e: unknown) => {
      s.logger.error({ err: e, taskQueue: w.options.taskQueue }, 'worker stopped with an error');
    }),
  );
  return {
    services: s,
    workers,
    relay,
    async stop() {
      prober?.stop();
      await relay?.stop();
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await Promise.allSettled(runs);
      await connection.close();
      if (!services) await s.close();
    },
  };
}

function parseArgs(argv: string[], config: Config): WorkerOptions {
  const roles = new Set<string>();
  let copyLocations: string[] | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--control' || a === '--mirror') roles.add(a.slice(2));
    else if (a === '--copy') copyLocations = (argv[++i] ?? '').split(',').filter(Boolean);
    else throw new Error(`unknown argument ${a}; use --control, --mirror, --copy <location,...>`);
  }
  if (roles.size === 0 && copyLocations === undefined) {
    return { control: true, mirror: true, copyLocations: config.storagePreference };
  }
  return { control: roles.has('control'), mirror: roles.has('mirror'), copyLocations: copyLocations ?? [] };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  runMain('worker', async () => {
    const config = loadConfig();
    const opts = parseArgs(process.argv.slice(2), config);
    const running = await startWorkers(config, opts);
    running.services.logger.info(
      { control: opts.control, mirror: opts.mirror, copy: opts.copyLocations },
      'workers running',
    );
    // In-flight activities get the whole shutdown grace (and the rest of the stop some time).
    return { stop: () => running.stop(), forceExitAfterMs: (config.workerShutdownGraceSeconds + 15) * 1000 };
  });
}
