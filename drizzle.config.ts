import { defineConfig } from 'drizzle-kit';
import { loadConfig } from './config.ts';

export default defineConfig({
  dialect: 'postgresql',
  schema: './db/schema.ts',
  out: './db/migrations',
  dbCredentials: { url: loadConfig(process.env, { requireKeys: false }).databaseUrl },
  migrations: { table: '__drizzle_migrations', schema: 'public' },
});
