import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { loadConfig as loadFullConfig } from '../config.ts';
import { configErrorOf } from './support/entrypoints.ts';

const KEYS = { MERIDIAN_SECRET_KEY: randomBytes(32).toString('base64'), MERIDIAN_TOKEN_KEY: randomBytes(32).toString('hex') };
/** Loads with both keys set, unless the environment given names them. */
const loadConfig = (env: Record<string, string>) => loadFullConfig({ ...KEYS, ...env });
const configError = (env: Record<string, string>) => configErrorOf(loadConfig, env);

describe('configuration', () => {
  it('has defaults that match the local stack of npm start', () => {
    const c = loadConfig({});
    expect(c.port).toBe(5000);
    expect(c.host).toBe('127.0.0.1');
    expect(c.storagePreference).toEqual(['us-east', 'eu-west', 'ap-south']);
    expect(c.temporal).toEqual({ address: '127.0.0.1:7233', namespace: 'default' });
    expect(c.publicUrl).toBe('http://127.0.0.1:5000');
    expect(c.devS3.accessKeyId).toBe('meridian');
  });

  it('reads the storage preference as an ordered list', () => {
    expect(loadConfig({ MERIDIAN_STORAGE_PREFERENCE: ' ap-south , us-east' }).storagePreference).toEqual(['ap-south', 'us-east']);
  });

  it.each([
    [{ DATABASE_URL: 'not a url' }, 'DATABASE_URL', /not a valid URL/],
    [{ DATABASE_URL: 'mysql://x@y/z' }, 'DATABASE_URL', /postgres/],
    [{ REDIS_URL: 'http://127.0.0.1:6379' }, 'REDIS_URL', /redis/],
    [{ PORT: 'eighty' }, 'PORT', /whole number/],
    [{ PORT: '70000' }, 'PORT', /between/],
    [{ TEMPORAL_ADDRESS: 'localhost' }, 'TEMPORAL_ADDRESS', /host:port/],
    [{ MERIDIAN_STORAGE_PREFERENCE: 'us-east,Bad Name' }, 'MERIDIAN_STORAGE_PREFERENCE', /not a valid location name/],
    [{ MERIDIAN_STORAGE_PREFERENCE: 'us-east,us-east' }, 'MERIDIAN_STORAGE_PREFERENCE', /twice/],
    [{ MERIDIAN_BLOB_SERVE_MODE: 'teleport' }, 'MERIDIAN_BLOB_SERVE_MODE', /redirect or proxy/],
    [{ MERIDIAN_SECRET_KEY: 'c2hvcnQ=' }, 'MERIDIAN_SECRET_KEY', /32 bytes/],
    [{ MERIDIAN_SECRET_KEY: '' }, 'MERIDIAN_SECRET_KEY', /is required/],
    [{ MERIDIAN_TOKEN_KEY: '' }, 'MERIDIAN_TOKEN_KEY', /is required/],
    [{ MERIDIAN_REPO_MIRROR_ROLLBACK: 'maybe' }, 'MERIDIAN_REPO_MIRROR_ROLLBACK', /true or false/],
  ])('names the bad variable in %o', (env, variable, problem) => {
    const e = configError(env);
    expect(e.variable).toBe(variable);
    expect(e.message).toMatch(new RegExp(`^${variable}: `));
    expect(e.message).toMatch(problem);
    expect(e.message).not.toContain('\n');
  });

  it('never prints a password from a URL in an error', () => {
    const e = configError({ DATABASE_URL: 'postgres://u:hunter2@host:notaport/db' });
    expect(e.message).not.toContain('hunter2');
  });
});
