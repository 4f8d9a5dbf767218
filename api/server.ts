// One registry API server: the services, the app, the listening socket and the health probe.
// api/main.ts is the process that runs it (in several processes sharing the port); tests start
// it in their own process.
import { createServer, type Server } from 'node:http';
import { ConfigError, type Config } from '../config.ts';
import { startHealthProber } from '../platform/health-prober.ts';
import { sealStoredProxyPasswords } from '../mirror/secrets.ts';
import { createServices, type Services } from '../platform/services.ts';
import { unknownPreferredLocations } from '../storage/locations.ts';
import { createApp } from './app.ts';
import { createMetricsApp } from './metrics.ts';

export interface RunningApi {
  server: Server;
  /** The separate metrics listener's URL (MERIDIAN_METRICS_ADDRESS), when there is one. */
  metricsUrl?: string;
  services: Services;
  url: string;
  close(): Promise<void>;
}

/** Checks the configuration against the database: every preferred location must exist. */
export async function validateAgainstDatabase(s: Services): Promise<void> {
  const unknown = await unknownPreferredLocations(s.db, s.config.storagePreference);
  if (unknown.length > 0) {
    throw new ConfigError('MERIDIAN_STORAGE_PREFERENCE', `unknown storage location ${unknown.map((n) => `"${n}"`).join(', ')}`);
  }
}

export interface ApiOptions {
  /** Run the location health probe here (one process per instance does). Default true. */
  healthProber?: boolean;
}

/** Mirrors saved before proxy passwords were sealed hold them in plain; seal them now rather than
 * when each mirror happens to be saved again. A failure is logged, not fatal: serving goes first. */
async function sealProxyPasswordsFromBefore(s: Services): Promise<void> {
  try {
    const sealed = await sealStoredProxyPasswords(s.db, s.secrets);
    if (sealed) s.logger.info({ mirrors: sealed }, 'sealed proxy passwords stored in plain by an earlier version');
  } catch (e) {
    s.logger.error({ err: e }, 'could not seal the proxy passwords stored in plain; retried at the next start');
  }
}

export async function startApi(config: Config, services?: Services, opts: ApiOptions = {}): Promise<RunningApi> {
  const s = services ?? createServices(config, 'api');
  try {
    await validateAgainstDatabase(s);
    await sealProxyPasswordsFromBefore(s);
    await s.locations.refresh();
  } catch (e) {
    if (!services) await s.close();
    throw e;
  }
  const app = createApp(s);
  // Requests are checked against their deadlines every few seconds (Node's default is 30 s).
  const server = createServer({ maxHeaderSize: 16 * 1024, connectionsCheckingInterval: 2_000 }, app.callback());
  // A request must arrive whole, body included, within MERIDIAN_REQUEST_TIMEOUT (a blob upload
  // must fit in it; a client trickling a body does not keep the socket for ever), its headers
  // within 30 s; a socket silent for MERIDIAN_IDLE_TIMEOUT is closed.
  server.requestTimeout = s.config.requestTimeoutSeconds * 1000;
  server.headersTimeout = Math.min(30_000, server.requestTimeout);
  server.keepAliveTimeout = 65_000;
  server.timeout = s.config.idleTimeoutSeconds * 1000;
  const listen = (srv: Server, port: number, host: string) =>
    new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, host, () => {
        srv.off('error', reject);
        resolve();
      });
    });
  let metricsServer: Server | undefined;
  try {
    await listen(server, config.port, config.host);
    if (config.metricsAddress) {
      const i = config.metricsAddress.lastIndexOf(':');
      metricsServer = createServer({ maxHeaderSize: 16 * 1024 }, createMetricsApp(s).callback());
      metricsServer.requestTimeout = 30_000;
      await listen(metricsServer, Number(config.metricsAddress.slice(i + 1)), config.metricsAddress.slice(0, i).replace(/^\[|\]$/g, ''));
    }
  } catch (e) {
    server.close();
    if (!services) await s.close();
    throw e;
  }
  if (!config.metricsAddress && !config.metricsToken && !/^(127\.|::1$|localhost$)/.test(config.host)) {
    s.logger.warn('GET /metrics is open to anyone who reaches the API: set MERIDIAN_METRICS_TOKEN or MERIDIAN_METRICS_ADDRESS');
  }
  const prober = opts.healthProber === false ? undefined : startHealthProber(s);
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.port;
  // Listening on port 0 (tests): links we hand out must name the port we really got.
  if (config.port === 0 && !process.env.MERIDIAN_PUBLIC_URL) s.config.publicUrl = `http://${config.host}:${port}`;
  const metricsAddr = metricsServer?.address();
  return {
    server,
    services: s,
    url: `http://${config.host}:${port}`,
    ...(metricsAddr && typeof metricsAddr === 'object' ? { metricsUrl: `http://${metricsAddr.family === 'IPv6' ? `[${metricsAddr.address}]` : metricsAddr.address}:${metricsAddr.port}` } : {}),
    async close() {
      prober?.stop();
      await Promise.all(
        [server, metricsServer].map(
          (srv) =>
            srv &&
            new Promise<void>((resolve) => {
              srv.close(() => resolve());
              srv.closeIdleConnections();
            }),
        ),
      );
      if (!services) await s.close();
    },
  };
}
