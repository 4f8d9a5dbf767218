// One registry API server: the services, the app, the listening socket and the health probe.
// api/main.ts is the process that runs it (in several processes sharing the port); tests start
// it in their own process.
import { createServer, type Server } from 'node:http';
import { ConfigError, type Config } from '../config.ts';
import { startHealthProber } from '../platform/health-prober.ts';
import { createServices, type Services } from '../platform/services.ts';
import { unknownPreferredLocations } from '../storage/locations.ts';
import { createApp } from './app.ts';

export interface RunningApi {
  server: Server;
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

export async function startApi(config: Config, services?: Services, opts: ApiOptions = {}): Promise<RunningApi> {
  const s = services ?? createServices(config, 'api');
  try {
    await validateAgainstDatabase(s);
    await s.locations.refresh();
  } catch (e) {
    if (!services) await s.close();
    throw e;
  }
  const app = createApp(s);
  const server = createServer({ maxHeaderSize: 16 * 1024 }, app.callback());
  // Blob uploads stream for as long as the client sends; idle sockets are what we time out.
  server.requestTimeout = 0;
  server.headersTimeout = 30_000;
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch(async (e) => {
    if (!services) await s.close();
    throw e;
  });
  const prober = opts.healthProber === false ? undefined : startHealthProber(s);
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.port;
  // Listening on port 0 (tests): links we hand out must name the port we really got.
  if (config.port === 0 && !process.env.MERIDIAN_PUBLIC_URL) s.config.publicUrl = `http://${config.host}:${port}`;
  return {
    server,
    services: s,
    url: `http://${config.host}:${port}`,
    async close() {
      prober?.stop();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      if (!services) await s.close();
    },
  };
}
