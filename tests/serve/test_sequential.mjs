// One client, its requests back to back on a server with one slot and no queue (--parallel 1
// --queue 0): each request starts after the previous answer came, so the slot is free and none may
// be refused with a 429. (The engine used to report a job finished before it freed the job's slot: a
// client quick enough to send its next request in between met a full server.)
import path from 'node:path';
import { assert, main, post, startServer, step, stopServer, streamChat, testContext, writeProbe } from './lib.mjs';

const ctx = testContext();
const N = ctx.sanitized ? 300 : 1000;

main('serve_sequential', async () => {
  const probe = writeProbe(path.join(ctx.work, 'never'), { modelId: ctx.gemma, hidden: 64, bias: -10 });
  const srv = await startServer(ctx, ['--model_id', ctx.gemma, '--probe_path', probe, '--ctx_size', '256', '--parallel', '1', '--queue', '0']);

  await step(`${N} requests one after another, streamed and not: every one answered, none refused`, async () => {
    const counts = {};
    for (let i = 0; i < N; i++) {
      const body = { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 1 + (i % 3) };
      const status = i % 4 === 3 ? (await streamChat(srv.port, body)).status : (await post(srv.port, '/v1/chat/completions', body)).status;
      counts[status] = (counts[status] || 0) + 1;
    }
    assert.deepEqual(counts, { 200: N }, `statuses of ${N} requests sent one after another: ${JSON.stringify(counts)}`);
  });

  await stopServer(srv);
});
