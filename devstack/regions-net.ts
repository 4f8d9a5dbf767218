// Regions as separate hosts: one network namespace per region, joined to this (the root)
// namespace by a veth pair of its own. Nothing routes between the pairs (no bridge, no
// forwarding), so a region reaches the shared services and the other regions only through the
// WAN relays listening on its pair's root end (regions-wan.ts). Each namespace's /etc/hosts
// (`ip netns exec` mounts /etc/netns/<ns>/hosts) names every region's S3 server: its own directly,
// the others at that relay, so one storage location endpoint works from every region.
// Creating and removing are idempotent; only these namespaces, their veths and /etc/netns/<ns>
// are touched. Needs root (CAP_NET_ADMIN).
import { execFile } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';

const exec = promisify(execFile);

export interface RegionNet {
  region: string;
  /** Network namespace name. */
  netns: string;
  /** The veth end in the root namespace: where the region's WAN relays listen. */
  hostIf: string;
  hostIp: string;
  /** The veth end inside the region, and its address: where the region's servers listen. */
  nsIf: string;
  nsIp: string;
}

/** Addressing of topology `id` (1–250): 10.77.<id>.0/24, a /30 per region. */
export function regionNets(id: number, regions: readonly string[]): RegionNet[] {
  if (!Number.isInteger(id) || id < 1 || id > 250) throw new Error(`topology id must be 1–250, got ${id}`);
  if (regions.length > 60) throw new Error('at most 60 regions');
  return regions.map((region, i) => ({
    region,
    netns: `mrd${id}-${region}`,
    hostIf: `mrd${id}h${i}`,
    nsIf: `mrd${id}n${i}`,
    hostIp: `10.77.${id}.${4 * i + 1}`,
    nsIp: `10.77.${id}.${4 * i + 2}`,
  }));
}

/** The host name of a region's S3 server inside every region of the topology. */
export function s3HostName(region: string): string {
  return `s3-${region}.meridian.internal`;
}

async function ip(...args: string[]): Promise<void> {
  await exec('ip', args);
}

async function netnsExists(name: string): Promise<boolean> {
  const { stdout } = await exec('ip', ['netns', 'list']);
  return stdout.split('\n').some((l) => l.split(' ')[0] === name);
}

async function linkExists(name: string): Promise<boolean> {
  return exec('ip', ['link', 'show', name]).then(
    () => true,
    () => false,
  );
}

/** Creates (or re-creates) the namespaces, veth pairs, addresses and hosts files. */
export async function createRegionNets(nets: RegionNet[]): Promise<void> {
  await removeRegionNets(nets);
  for (const n of nets) {
    await ip('netns', 'add', n.netns);
    await ip('link', 'add', n.hostIf, 'type', 'veth', 'peer', 'name', n.nsIf);
    await ip('link', 'set', n.nsIf, 'netns', n.netns);
    await ip('addr', 'add', `${n.hostIp}/30`, 'dev', n.hostIf);
    await ip('link', 'set', n.hostIf, 'up');
    await ip('-n', n.netns, 'addr', 'add', `${n.nsIp}/30`, 'dev', n.nsIf);
    await ip('-n', n.netns, 'link', 'set', n.nsIf, 'up');
    await ip('-n', n.netns, 'link', 'set', 'lo', 'up');
    const hosts = ['127.0.0.1 localhost', ...nets.map((o) => `${o.region === n.region ? n.nsIp : n.hostIp} ${s3HostName(o.region)}`)];
    mkdirSync(`/etc/netns/${n.netns}`, { recursive: true });
    writeFileSync(`/etc/netns/${n.netns}/hosts`, hosts.join('\n') + '\n');
  }
}

/** Removes what createRegionNets made; missing pieces are fine. */
export async function removeRegionNets(nets: RegionNet[]): Promise<void> {
  for (const n of nets) {
    if (await linkExists(n.hostIf)) await ip('link', 'del', n.hostIf).catch(() => {});
    if (await netnsExists(n.netns)) await ip('netns', 'del', n.netns).catch(() => {});
    rmSync(`/etc/netns/${n.netns}`, { recursive: true, force: true });
  }
}

/** Cuts the region off from everything outside it (the link drops; connections stall, as over a
 * real partition, and resume if it heals before TCP gives up). */
export async function partition(n: RegionNet): Promise<void> {
  await ip('-n', n.netns, 'link', 'set', n.nsIf, 'down');
}

export async function heal(n: RegionNet): Promise<void> {
  await ip('-n', n.netns, 'link', 'set', n.nsIf, 'up');
}

/** The command line running `command` inside the region's namespace. */
export function inRegion(n: RegionNet, command: string, args: string[]): { command: string; args: string[] } {
  return { command: 'ip', args: ['netns', 'exec', n.netns, command, ...args] };
}

/** Namespaces and veths can be made here (root, and a kernel that has them). */
export async function canMakeRegionNets(): Promise<boolean> {
  if (process.getuid?.() !== 0) return false;
  const probe = regionNets(250, ['probe'])[0]!;
  try {
    await createRegionNets([probe]);
    return true;
  } catch {
    return false;
  } finally {
    await removeRegionNets([probe]).catch(() => {});
  }
}
