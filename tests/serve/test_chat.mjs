// `opencon serve` chat completions through the official OpenAI SDK and as raw SSE: streamed and not,
// multi-turn (system/developer, user, assistant; content as a string and as text parts),
// include_usage, max_tokens / max_completion_tokens, seed reproducibility and stop strings.
import path from 'node:path';
import { assert, main, parseSSE, post, sdkClient, startServer, step, stopServer, streamChat, testContext, writeProbe } from './lib.mjs';

const ctx = testContext();

main('serve_chat', async () => {
  // a probe that never pauses: the guard releases everything (the guard paths are test_guard.mjs's)
  const probe = writeProbe(path.join(ctx.work, 'never'), { modelId: ctx.gemma, hidden: 64, bias: -10 });
  const srv = await startServer(ctx, ['--model_id', ctx.gemma, '--probe_path', probe, '--classifier_dir', ctx.classifier, '--ctx_size', '1024', '--parallel', '2']);
  const client = sdkClient(ctx, srv.port);
  const user = (content) => [{ role: 'user', content }];
  const PROMPT = 'Hello there';
  let full; // the greedy answer to PROMPT, not streamed

  await step('non-streaming chat through the SDK: a chat.completion with usage that counts the rendered prompt', async () => {
    full = await client.chat.completions.create({ model: ctx.gemma, messages: user(PROMPT), temperature: 0, max_tokens: 200 });
    assert.equal(full.object, 'chat.completion');
    assert.match(full.id, /^chatcmpl-/);
    assert.ok(Math.abs(full.created - Date.now() / 1000) < 60, `created ${full.created}`);
    assert.equal(full.model, ctx.gemma);
    assert.equal(full.choices.length, 1);
    const c = full.choices[0];
    assert.equal(c.index, 0);
    assert.equal(c.message.role, 'assistant');
    assert.equal(typeof c.message.content, 'string');
    assert.ok(c.message.content.length > 5, `a short answer: ${JSON.stringify(c.message.content)}`);
    assert.ok(['stop', 'length'].includes(c.finish_reason));
    // the prompt tokens are the chat template's rendering, tokenized without specials
    const tmpl = await post(srv.port, '/apply-template', { messages: user(PROMPT) });
    assert.equal(tmpl.status, 200, tmpl.text);
    assert.ok(tmpl.json.prompt.includes(PROMPT));
    const tok = await post(srv.port, '/tokenize', { content: tmpl.json.prompt, add_special: false });
    assert.equal(tok.status, 200, tok.text);
    assert.equal(full.usage.prompt_tokens, tok.json.tokens.length);
    assert.ok(full.usage.completion_tokens > 0);
    assert.equal(full.usage.total_tokens, full.usage.prompt_tokens + full.usage.completion_tokens);
    assert.equal(full.guard.status, 'completed');
    assert.equal(full.guard.mode, 'enforce');
    assert.ok(full.guard.probe_calls > 0);
  });

  await step('streaming through the SDK with include_usage: the same text, finish_reason and usage', async () => {
    const stream = await client.chat.completions.create({ model: ctx.gemma, messages: user(PROMPT), temperature: 0, max_tokens: 200, stream: true,
      stream_options: { include_usage: true } });
    let content = '', finish = null, usage = null, ids = new Set(), n = 0;
    for await (const chunk of stream) {
      n++;
      ids.add(chunk.id);
      assert.equal(chunk.object, 'chat.completion.chunk');
      if (chunk.usage) usage = chunk.usage;
      for (const ch of chunk.choices) {
        if (ch.delta.content) content += ch.delta.content;
        if (ch.finish_reason) finish = ch.finish_reason;
      }
    }
    assert.ok(n >= 3);
    assert.equal(ids.size, 1);
    assert.equal(content, full.choices[0].message.content);
    assert.equal(finish, full.choices[0].finish_reason);
    assert.deepEqual(usage, full.usage);
  });

  await step('raw SSE, strictly parsed, with and without include_usage', async () => {
    for (const includeUsage of [true, false]) {
      const body = { messages: user(PROMPT), temperature: 0, max_tokens: 200 };
      if (includeUsage) body.stream_options = { include_usage: true };
      const r = await streamChat(srv.port, body);
      assert.equal(r.status, 200);
      assert.match(r.headers['content-type'], /^text\/event-stream/);
      const s = parseSSE(r.text, { includeUsage });
      assert.equal(s.content, full.choices[0].message.content);
      assert.equal(s.finishReason, full.choices[0].finish_reason);
      assert.equal(s.guard.status, 'completed');
      if (includeUsage) assert.deepEqual(s.usage, full.usage);
      assert.notEqual(s.chunks[0].id, full.id, 'two requests with one id');
    }
  });

  await step('multi-turn: system/developer, user, assistant, user; string content and text parts render and answer alike', async () => {
    const turns = [['system', 'You are terse.'], ['user', 'What is a cat?'], ['assistant', 'A small feline.'], ['user', 'And a dog?']];
    const asStrings = turns.map(([role, content]) => ({ role, content }));
    const asParts = turns.map(([role, content], i) => ({
      role: i === 0 ? 'developer' : role,
      content: [{ type: 'text', text: content.slice(0, 4) }, { type: 'text', text: content.slice(4) }],
    }));
    const t1 = await post(srv.port, '/apply-template', { messages: asStrings });
    const t2 = await post(srv.port, '/apply-template', { messages: asParts });
    assert.equal(t1.status, 200, t1.text);
    assert.equal(t2.json.prompt, t1.json.prompt);
    let at = 0; // every turn's text, in order
    for (const [, content] of turns) {
      const i = t1.json.prompt.indexOf(content, at);
      assert.ok(i >= at, `"${content}" is not in the rendered prompt after offset ${at}:\n${t1.json.prompt}`);
      at = i + content.length;
    }
    const a = await client.chat.completions.create({ model: 'any', messages: asStrings, temperature: 0, max_tokens: 60 });
    const b = await client.chat.completions.create({ model: 'any', messages: asParts, temperature: 0, max_tokens: 60 });
    assert.equal(b.choices[0].message.content, a.choices[0].message.content);
    assert.equal(a.usage.prompt_tokens, b.usage.prompt_tokens);
    const single = await client.chat.completions.create({ model: 'any', messages: user('And a dog?'), temperature: 0, max_tokens: 60 });
    assert.ok(a.usage.prompt_tokens > single.usage.prompt_tokens + 10, 'the earlier turns are not in the prompt');
  });

  await step('max_tokens and max_completion_tokens: the answer is cut there (finish_reason length), a prefix of the longer one', async () => {
    const text = full.choices[0].message.content;
    assert.ok(full.usage.completion_tokens > 8, 'the reference answer is too short for this test');
    for (const [field, n] of [['max_tokens', 5], ['max_completion_tokens', 7]]) {
      const r = await client.chat.completions.create({ model: 'any', messages: user(PROMPT), temperature: 0, [field]: n });
      assert.equal(r.usage.completion_tokens, n, field);
      assert.equal(r.choices[0].finish_reason, 'length', field);
      assert.ok(text.startsWith(r.choices[0].message.content), `${field}: not a prefix`);
      assert.ok(r.choices[0].message.content.length > 0);
      assert.equal(r.guard.stop_reason, 'max_new_tokens');
    }
    // both: max_completion_tokens (the newer name) wins
    const r = await client.chat.completions.create({ model: 'any', messages: user(PROMPT), temperature: 0, max_tokens: 3, max_completion_tokens: 6 });
    assert.equal(r.usage.completion_tokens, 6);
    const s = parseSSE((await streamChat(srv.port, { messages: user(PROMPT), temperature: 0, max_tokens: 4, stream_options: { include_usage: true } })).text,
      { includeUsage: true });
    assert.equal(s.usage.completion_tokens, 4);
    assert.equal(s.finishReason, 'length');
  });

  await step('seed: the same seed samples the same answer (streamed or not), other seeds differ', async () => {
    const ask = (seed) => client.chat.completions.create({ model: 'any', messages: user('Tell me a story'), temperature: 1, seed, max_tokens: 40 });
    const a = await ask(42), b = await ask(42);
    assert.equal(a.choices[0].message.content, b.choices[0].message.content);
    const s = parseSSE((await streamChat(srv.port, { messages: user('Tell me a story'), temperature: 1, seed: 42, max_tokens: 40 })).text);
    assert.equal(s.content, a.choices[0].message.content);
    const others = await Promise.all([43, 44, 45].map(ask));
    assert.ok(others.some((o) => o.choices[0].message.content !== a.choices[0].message.content), 'seeds 42..45 all sampled one answer');
    const greedy = await client.chat.completions.create({ model: 'any', messages: user('Tell me a story'), temperature: 0, max_tokens: 40 });
    const greedy2 = await client.chat.completions.create({ model: 'any', messages: user('Tell me a story'), temperature: 0, seed: 7, max_tokens: 40 });
    assert.equal(greedy.choices[0].message.content, greedy2.choices[0].message.content, 'temperature 0 depends on the seed');
  });

  await step('stop strings: the content ends before the first one, which is never sent, finish_reason stop', async () => {
    const text = full.choices[0].message.content;
    // a stop string from the middle of the greedy answer (its first occurrence decides)
    const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 2);
    const expected = text.slice(0, text.indexOf(stop));
    const r = await client.chat.completions.create({ model: 'any', messages: user(PROMPT), temperature: 0, max_tokens: 200, stop: [stop, 'never-generated-string'] });
    assert.equal(r.choices[0].message.content, expected);
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal(r.guard.stop_reason, 'stop_sequence');
    const s = parseSSE((await streamChat(srv.port, { messages: user(PROMPT), temperature: 0, max_tokens: 200, stop })).text);
    assert.equal(s.content, expected);
    assert.ok(!s.content.includes(stop));
    assert.equal(s.finishReason, 'stop');
    // a stop string that is the whole answer's first character: nothing is sent
    const r0 = await client.chat.completions.create({ model: 'any', messages: user(PROMPT), temperature: 0, max_tokens: 200, stop: text[0] });
    assert.equal(r0.choices[0].message.content, '');
    assert.equal(r0.choices[0].finish_reason, 'stop');
  });

  await stopServer(srv);
});
