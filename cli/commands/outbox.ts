// `meridian outbox` and `meridian outbox requeue <id>`: the transactional outbox's backlog and
// its dead-lettered intents (starts Temporal refused on every attempt), for operators.
import { Command, InvalidArgumentError } from 'commander';
import { api, type ApiTarget, type CliIo } from '../client.ts';
import type { OutboxView } from '../../platform/outbox-dead.ts';

function intentId(v: string): number {
  if (!/^[1-9]\d{0,15}$/.test(v)) throw new InvalidArgumentError('expected an outbox intent id (a positive whole number)');
  return Number(v);
}

export function outboxCommand(io: CliIo, target: () => ApiTarget): Command {
  const outbox = new Command('outbox')
    .description('work waiting to reach Temporal, and dead-lettered intents (superusers)')
    .option('--json', 'print the API answer')
    .action(async (o: { json?: boolean }) => {
      const view = (await api(target(), 'GET', '/outbox')).json as OutboxView;
      if (o.json) return io.out(JSON.stringify(view, null, 2));
      io.out(`pending ${view.pending} (oldest ${Math.round(view.oldest_pending_age_seconds)} s)  dead ${view.dead}`);
      for (const d of view.dead_intents) {
        io.out(`  #${d.id}  ${d.workflow_type} ${d.workflow_id}  ${d.attempts} attempts, dead since ${d.dead_at}: ${(d.last_error ?? '').replace(/\s+/g, ' ')}`);
      }
      if (view.dead > 0) io.out('requeue one with `meridian outbox requeue <id>` once its cause is fixed');
    });
  outbox
    .command('requeue')
    .description('give a dead-lettered intent back to the relay, with a fresh attempt budget')
    .argument('<id>', 'the intent id (#id in `meridian outbox`)', intentId)
    .action(async (id: number) => {
      await api(target(), 'POST', `/outbox/${id}/requeue`);
      io.out(`requeued outbox intent ${id}`);
    });
  return outbox;
}
