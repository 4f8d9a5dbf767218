import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { SecretBox, SecretBoxError } from '../security/secretbox.ts';

describe('secrets at rest', () => {
  const key = randomBytes(32);

  it('round-trips and never stores the plaintext', () => {
    const box = new SecretBox(key);
    const sealed = box.seal('p4ssw0rd-upstream', 'mirror:1:password');
    expect(sealed.includes(Buffer.from('p4ssw0rd-upstream'))).toBe(false);
    expect(box.open(sealed, 'mirror:1:password')).toBe('p4ssw0rd-upstream');
  });

  it('refuses a ciphertext moved to another row or tampered with', () => {
    const box = new SecretBox(key);
    const sealed = box.seal('secret', 'mirror:1:password');
    expect(() => box.open(sealed, 'mirror:2:password')).toThrow(SecretBoxError);
    const tampered = Buffer.from(sealed);
    tampered[tampered.length - 20]! ^= 1;
    expect(() => box.open(tampered, 'mirror:1:password')).toThrow(SecretBoxError);
  });

  it('opens secrets sealed with a previous key during rotation, and says which need re-sealing', () => {
    const oldBox = new SecretBox(key);
    const sealed = oldBox.seal('secret', 'ctx');
    const newKey = randomBytes(32);
    const rotating = new SecretBox(newKey, key);
    expect(rotating.open(sealed, 'ctx')).toBe('secret');
    expect(rotating.needsRotation(sealed)).toBe(true);
    expect(rotating.needsRotation(rotating.seal('secret', 'ctx'))).toBe(false);
    expect(() => new SecretBox(newKey).open(sealed, 'ctx')).toThrow(/not configured/);
  });
});
