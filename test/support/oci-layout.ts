// Writes a multi-architecture OCI image layout (an index of two platform images sharing a base
// layer) to a directory, for real clients (skopeo, crane) to push.
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { gzipSync } from 'node:zlib';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

export interface LayoutImage {
  dir: string;
  tag: string;
  indexDigest: string;
  /** Every blob and manifest digest in the layout. */
  digests: string[];
}

/** A tar archive holding one file (enough for a layer clients accept). */
function tarWithFile(name: string, content: Buffer): Buffer {
  const header = Buffer.alloc(512);
  header.write(name, 0);
  header.write('0000644\0', 100);
  header.write('0000000\0', 108);
  header.write('0000000\0', 116);
  header.write(content.length.toString(8).padStart(11, '0') + '\0', 124);
  header.write('00000000000\0', 136);
  header.write('        ', 148);
  header.write('0', 156);
  header.write('ustar\0', 257);
  header.write('00', 263);
  let sum = 0;
  for (const b of header) sum += b;
  header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  const pad = Buffer.alloc((512 - (content.length % 512)) % 512);
  return Buffer.concat([header, content, pad, Buffer.alloc(1024)]);
}

export function writeMultiArchLayout(root: string, tag = 'latest'): LayoutImage {
  const blobsDir = path.join(root, 'blobs', 'sha256');
  mkdirSync(blobsDir, { recursive: true });
  const digests: string[] = [];
  const put = (b: Buffer): string => {
    const h = sha(b);
    writeFileSync(path.join(blobsDir, h), b);
    digests.push(`sha256:${h}`);
    return `sha256:${h}`;
  };
  const shared = gzipSync(tarWithFile('shared.txt', randomBytes(4096)));
  const sharedDigest = put(shared);
  const manifests = (['amd64', 'arm64'] as const).map((arch) => {
    const own = gzipSync(tarWithFile(`${arch}.bin`, randomBytes(8192)));
    const ownDigest = put(own);
    const diffIds = [`sha256:${sha(tarWithFile('shared.txt', Buffer.alloc(0)))}`];
    const config = Buffer.from(JSON.stringify({ architecture: arch, os: 'linux', rootfs: { type: 'layers', diff_ids: diffIds }, config: {} }));
    const configDigest = put(config);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
        layers: [
          { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sharedDigest, size: shared.length },
          { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: ownDigest, size: own.length },
        ],
      }),
    );
    return { digest: put(manifest), size: manifest.length, platform: { architecture: arch, os: 'linux' } };
  });
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: manifests.map((m) => ({ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m })),
    }),
  );
  const indexDigest = put(index);
  writeFileSync(path.join(root, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    path.join(root, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.oci.image.index.v1+json', digest: indexDigest, size: index.length, annotations: { 'org.opencontainers.image.ref.name': tag } }],
    }),
  );
  return { dir: root, tag, indexDigest, digests };
}
