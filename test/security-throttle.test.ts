// Issue 10 item 5: failed logins are throttled per account and per client address, shared by
// every instance through Redis; 429 with Retry-After (TOOMANYREQUESTS on /v2, problem details on
// /api/v1); the right password works again once the window passes; successful logins never count;
// an unknown user costs the same Argon2 verification as a known one.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addressBucket } from '../auth/login-throttle.ts';
import { basic, createTestUser, startTestApi } from './support/harness.ts';

type Api = Awaited<ReturnType<typeof startTestApi>>;
type User = Awaited<ReturnType<typeof createTestUser>>;

const LIMITS = { MERIDIAN_LOGIN_MAX_FAILURES_PER_ACCOUNT: '3', MERIDIAN_LOGIN_MAX_FAILURES_PER_ADDRESS: '8', MERIDIAN_LOGIN_FAILURE_WINDOW: '2' };

describe('login throttling', () => {
  // Two instances sharing Redis (and the test file's key prefix); the second trusts
  // X-Forwarded-For, so a test can speak from several client addresses.
  let one: Api;
  let two: Api;
  let unthrottled: Api;
  let alice: User;
  let bob: User;

  beforeAll(async () => {
    [one, two, unthrottled] = await Promise.all([
      startTestApi(LIMITS),
      startTestApi({ ...LIMITS, MERIDIAN_TRUST_PROXY: 'true' }),
      startTestApi({ MERIDIAN_LOGIN_MAX_FAILURES_PER_ACCOUNT: '0', MERIDIAN_LOGIN_MAX_FAILURES_PER_ADDRESS: '0' }),
    ]);
    [alice, bob] = await Promise.all([createTestUser('thr-alice'), createTestUser('thr-bob')]);
  });
  afterAll(async () => {
    await Promise.all([one?.close(), two?.close(), unthrottled?.close()]);
  });

  const get = (api: Api, path: string, authorization: string, from?: string) =>
    fetch(`${api.url}${path}`, { headers: { authorization, ...(from ? { 'x-forwarded-for': `198.51.100.1, ${from}` } : {}) } });
  const passwordGrant = (api: Api, username: string, password: string) =>
    fetch(`${api.url}/v2/auth`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'password', username, password, service: 'x', scope: '' }).toString(),
    });
  const retryAfter = (r: Response) => Number(r.headers.get('retry-after'));

  it("an account's failures throttle it on /v2/auth, /v2/ and /api/v1 on every instance, right password included, until the window passes", async () => {
    const wrong = basic(alice.username, 'not-the-password');
    for (let i = 0; i < 3; i++) expect((await get(one, '/v2/auth?service=x', wrong)).status).toBe(401);

    const ping = await get(two, '/v2/', alice.authorization);
    expect(ping.status).toBe(429);
    expect(retryAfter(ping)).toBeGreaterThanOrEqual(1);
    expect(retryAfter(ping)).toBeLessThanOrEqual(2);
    expect(((await ping.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('TOOMANYREQUESTS');

    const token = await get(one, '/v2/auth?service=x', alice.authorization);
    expect(token.status).toBe(429);
    expect(((await token.json()) as { errors: { code: string }[] }).errors[0]!.code).toBe('TOOMANYREQUESTS');
    const grant = await passwordGrant(two, alice.username, alice.password);
    expect(grant.status).toBe(429);
    expect(retryAfter(grant)).toBeGreaterThanOrEqual(1);

    const api = await get(one, '/api/v1/user/', alice.authorization);
    expect(api.status).toBe(429);
    expect(api.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(retryAfter(api)).toBeGreaterThanOrEqual(1);
    expect(await api.json()).toMatchObject({ status: 429, error_type: 'too_many_requests' });

    // Another account from the same address is not affected (3 failures < 8 per address).
    expect((await get(two, '/v2/', bob.authorization)).status).toBe(200);

    await sleep(retryAfter(api) * 1000 + 300);
    expect((await get(two, '/v2/', alice.authorization)).status).toBe(200);
    expect((await get(one, '/api/v1/user/', alice.authorization)).status).toBe(200);
    expect((await passwordGrant(one, alice.username, alice.password)).status).toBe(200);
  });

  it('successful logins never count, and one clears the earlier failures of its account', async () => {
    for (let i = 0; i < 25; i++) expect((await get(one, '/v2/', bob.authorization)).status).toBe(200);
    const wrong = basic(bob.username, 'typo');
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 2; i++) expect((await get(one, '/v2/', wrong)).status).toBe(401);
      expect((await get(one, '/v2/', bob.authorization)).status).toBe(200);
    }
    await sleep(2300); // the address counted 6 failures; let its window pass
  });

  it('an address trying many accounts is throttled (IPv6 by its /64), other addresses are not', async () => {
    for (let i = 0; i < 8; i++) {
      expect((await get(two, '/api/v1/user/', basic(`nobody-${i}`, 'guess'), '203.0.113.7')).status).toBe(401);
    }
    const blocked = await get(two, '/api/v1/user/', bob.authorization, '203.0.113.7');
    expect(blocked.status).toBe(429);
    expect((await get(two, '/api/v1/user/', bob.authorization, '203.0.113.8')).status).toBe(200);

    for (let i = 0; i < 8; i++) expect((await get(two, '/v2/', basic(`nobody-v6-${i}`, 'guess'), `2001:db8:1:2::${i + 1}`)).status).toBe(401);
    expect((await get(two, '/v2/', bob.authorization, '2001:db8:1:2:ffff::9')).status).toBe(429);
    expect((await get(two, '/v2/', bob.authorization, '2001:db8:1:3::1')).status).toBe(200);
    // The socket's own address is unaffected by what was counted against forwarded ones.
    expect((await get(one, '/v2/', bob.authorization)).status).toBe(200);
  });

  it('counts IPv6 clients by /64 and IPv4-mapped ones as IPv4', () => {
    expect(addressBucket('2001:db8:1:2::1')).toBe(addressBucket('2001:0db8:0001:0002:ffff:ffff:ffff:ffff'));
    expect(addressBucket('2001:db8:1:2::1')).not.toBe(addressBucket('2001:db8:1:3::1'));
    expect(addressBucket('::ffff:192.0.2.1')).toBe('192.0.2.1');
    expect(addressBucket('192.0.2.1')).toBe('192.0.2.1');
  });

  it('an unknown user costs the same password verification as a known one (no enumeration by timing)', async () => {
    const time = async (authorization: string) => {
      const start = performance.now();
      expect((await get(unthrottled, '/v2/', authorization)).status).toBe(401);
      return performance.now() - start;
    };
    const known: number[] = [];
    const unknown: number[] = [];
    for (let i = 0; i < 12; i++) {
      known.push(await time(basic(alice.username, `wrong-${i}`)));
      unknown.push(await time(basic(`no-such-user-${i}`, `wrong-${i}`)));
    }
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1]!;
    // Without the dummy verification an unknown name answered ~10x faster (2 ms against 18 ms).
    expect(median(unknown) / median(known)).toBeGreaterThan(0.5);
    // The limits are off on this instance: 24 failures, still 401 rather than 429.
    expect((await get(unthrottled, '/v2/', alice.authorization)).status).toBe(200);
  });
});
