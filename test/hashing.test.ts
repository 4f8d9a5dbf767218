import { createHash, randomBytes } from 'node:crypto';
import { createSHA256 } from 'hash-wasm';
import { describe, expect, it } from 'vitest';
import { createResumableHasher, HASHER_IMPLEMENTATION, restoreHasher } from '../registry/hashing.ts';

describe('resumable hashing', () => {
  it('uses the native OpenSSL hasher when setup could build it', () => {
    // setup.sh builds native/sha on this machine kind; a fallback here means a slow registry.
    expect(HASHER_IMPLEMENTATION).toBe('openssl');
  });

  it.each(['sha256', 'sha512'] as const)('%s: saving and restoring mid-stream gives the digest of the whole', async (alg) => {
    const parts = [randomBytes(1), randomBytes(63), randomBytes(1000), randomBytes(70_000), randomBytes(5)];
    let h = await createResumableHasher(alg);
    for (const p of parts) {
      h.update(p);
      h = await restoreHasher(h.save());
    }
    expect(h.digest()).toBe(`${alg}:${createHash(alg).update(Buffer.concat(parts)).digest('hex')}`);
  });

  it.each(['sha256', 'sha512'] as const)('%s: chunks queued for the thread pool are hashed in order, across saves', async (alg) => {
    // More than one batch per round, odd sizes, views at offsets into a shared buffer (as the
    // HTTP parser hands out body chunks).
    const pool = randomBytes(5 * 1024 * 1024);
    const rounds = [0, 1, 2].map((r) => Array.from({ length: 40 }, (_, i) => pool.subarray(r * 1000 + i * 77, r * 1000 + i * 77 + 1 + ((i * 65_537) % 200_000))));
    let h = await createResumableHasher(alg);
    for (const chunks of rounds) {
      for (const c of chunks) h.queue(c);
      expect(() => h.save()).toThrow(/settled/);
      await h.settled();
      expect(h.queuedBytes).toBe(0);
      h = await restoreHasher(h.save());
    }
    expect(h.digest()).toBe(`${alg}:${createHash(alg).update(Buffer.concat(rounds.flat())).digest('hex')}`);
  });

  it('continues a state saved by the WebAssembly hasher (mixed deployments, older sessions)', async () => {
    const a = randomBytes(777);
    const b = randomBytes(1234);
    const w = await createSHA256();
    w.init();
    w.update(a);
    const state = Buffer.concat([Buffer.from('hw1:sha256:'), Buffer.from(w.save())]);
    const h = await restoreHasher(state);
    h.update(b);
    expect(h.digest()).toBe(`sha256:${createHash('sha256').update(Buffer.concat([a, b])).digest('hex')}`);
  });

  it('refuses a state it does not recognise', async () => {
    await expect(restoreHasher(Buffer.from('garbage'))).rejects.toThrow(/unrecognised/);
  });
});
