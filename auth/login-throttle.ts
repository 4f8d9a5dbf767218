// Brute-force protection for password logins (Basic on /v2, /v2/auth and /api/v1, and the token
// endpoint's password grant). Failed verifications are counted in Redis, so every API process and
// instance shares the counts: per account (users only — robot tokens are 256-bit random strings
// nobody guesses, and counting them would let anyone who knows a robot's name lock a CI job out)
// and per client address (an IPv6 client counts by its /64, which one subscriber holds whole).
// Once either count reaches its limit within the window, every login of that account or from that
// address answers 429 with Retry-After — the right password included, or a throttled guesser
// would still learn when it guessed right — until the window of the first failure ends. Only
// failures count, so clients and tests that log in on every request are never throttled.
//
// Redis unavailable: logins go on unthrottled (Redis holds only rebuildable state; refusing every
// login while it restarts would be worse than a few minutes without a limit).
import { createHash } from 'node:crypto';
import { isIPv6 } from 'node:net';
import type { Redis } from 'ioredis';

export interface LoginThrottleSettings {
  /** Failures of one account within the window before it is throttled; 0 turns the limit off. */
  maxFailuresPerAccount: number;
  /** Failures from one client address within the window; 0 turns the limit off. */
  maxFailuresPerAddress: number;
  windowSeconds: number;
}

/** Too many failed logins: answer 429 with `Retry-After: retryAfterSeconds`. */
export class LoginThrottledError extends Error {
  constructor(readonly retryAfterSeconds: number) {
    super(`too many failed logins, retry in ${retryAfterSeconds} s`);
    this.name = 'LoginThrottledError';
  }
}

export interface LoginAttempt {
  /** The account name given (user or robot). */
  name: string;
  /** The client's address (the socket peer, or the trusted proxy's X-Forwarded-For entry). */
  address: string;
}

/** The address a failure is counted against: IPv4 as is, IPv6 by its /64. */
export function addressBucket(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!isIPv6(address)) return address;
  const [head, tail = ''] = address.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = address.includes('::') ? [...left, ...Array(8 - left.length - right.length).fill('0'), ...right] : left;
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g || '0', 16).toString(16))
    .join(':')}::/64`;
}

function keysOf(a: LoginAttempt): { account?: string; address: string } {
  const h = (s: string) => createHash('sha256').update(s).digest('base64url').slice(0, 22);
  return {
    ...(a.name.includes('+') ? {} : { account: `login-fail:acct:${h(a.name)}` }),
    address: `login-fail:addr:${h(addressBucket(a.address))}`,
  };
}

export class LoginThrottle {
  constructor(
    private readonly redis: Redis,
    private readonly settings: LoginThrottleSettings,
    private readonly onRedisError: (e: Error) => void = () => {},
  ) {}

  private get enabled(): boolean {
    return this.settings.maxFailuresPerAccount > 0 || this.settings.maxFailuresPerAddress > 0;
  }

  /** Throws LoginThrottledError when the account or the address is over its limit. Returns the
   * account's failure count (so a success can clear it). */
  async check(a: LoginAttempt): Promise<number> {
    if (!this.enabled) return 0;
    const keys = keysOf(a);
    const { maxFailuresPerAccount: perAccount, maxFailuresPerAddress: perAddress } = this.settings;
    try {
      const [acct, addr] = await this.redis.mget(keys.account ?? keys.address, keys.address);
      const accountFailures = keys.account ? Number(acct ?? 0) : 0;
      const over =
        perAccount > 0 && keys.account && accountFailures >= perAccount ? keys.account : perAddress > 0 && Number(addr ?? 0) >= perAddress ? keys.address : undefined;
      if (over) {
        const ms = await this.redis.pttl(over);
        throw new LoginThrottledError(Math.max(1, Math.ceil((ms > 0 ? ms : this.settings.windowSeconds * 1000) / 1000)));
      }
      return accountFailures;
    } catch (e) {
      if (e instanceof LoginThrottledError) throw e;
      this.onRedisError(e as Error);
      return 0;
    }
  }

  /** Counts a failed verification against the account and the address. The window starts at
   * the first failure (SET NX with the expiry; INCR keeps it). */
  async failed(a: LoginAttempt): Promise<void> {
    if (!this.enabled) return;
    const keys = keysOf(a);
    const ms = this.settings.windowSeconds * 1000;
    const p = this.redis.pipeline();
    for (const k of [keys.account, keys.address]) {
      if (!k) continue;
      p.set(k, '0', 'PX', ms, 'NX');
      p.incr(k);
    }
    await p.exec().catch((e: unknown) => this.onRedisError(e as Error));
  }

  /** A successful login forgets the account's earlier failures (a user who mistyped twice starts
   * afresh); the address keeps its count. */
  async succeeded(a: LoginAttempt, accountFailures: number): Promise<void> {
    const { account } = keysOf(a);
    if (!account || accountFailures === 0) return;
    await this.redis.del(account).catch((e: unknown) => this.onRedisError(e as Error));
  }
}
