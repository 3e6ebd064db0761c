// The official OpenAI Node SDK as a real client of the proxy. Started by the gtest
// E2eNodeSdk (tests/e2e/node_sdk_test.cpp), which runs the proxy and three fake upstreams
// and passes PROXY_BASE_URL. Models: "chat" (plain replies), "tools" (tool calls),
// "broken" (the upstream answers 400 with a vLLM-style integer code), "legacy" (a legacy
// function_call stream in 12+ pieces), "ollama-style" (two tool calls both at index 0).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.PROXY_BASE_URL;
assert.ok(baseURL, 'PROXY_BASE_URL must be set');
const client = new OpenAI({ baseURL, apiKey: 'EMPTY', maxRetries: 0, timeout: 20000 });
const messages = [{ role: 'user', content: 'hello' }];

test('models.list names the registry models', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids.sort(), ['broken', 'chat', 'legacy', 'ollama-style', 'tools']);
});

test('chat.completions.create, non-streaming', async () => {
  const r = await client.chat.completions.create({ model: 'chat', messages });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.model, 'chat');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(r.choices[0].message.content.length > 0);
  assert.equal(r.usage.prompt_tokens, 7);
});

test('chat.completions.create, streaming with for await', async () => {
  const stream = await client.chat.completions.create({ model: 'chat', messages, stream: true });
  let text = '';
  let chunks = 0;
  const ids = new Set();
  let finish = null;
  for await (const chunk of stream) {
    chunks += 1;
    ids.add(chunk.id);
    assert.equal(chunk.model, 'chat');
    assert.equal(chunk.object, 'chat.completion.chunk');
    assert.ok(chunk.choices.length > 0, 'no usage-only chunk the client did not ask for');
    const delta = chunk.choices[0].delta;
    if (delta.content) text += delta.content;
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  assert.equal(text, 'tok'.repeat(3));
  assert.ok(chunks >= 4);
  assert.equal(ids.size, 1, 'one id across the stream');
  assert.equal(finish, 'stop');
});

test('streaming with include_usage delivers the usage chunk', async () => {
  const stream = await client.chat.completions.create({
    model: 'chat', messages, stream: true, stream_options: { include_usage: true },
  });
  let usage = null;
  for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
  assert.ok(usage);
  assert.equal(usage.prompt_tokens, 7);
});

test('a tool-call response, whole and streamed', async () => {
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }];
  const r = await client.chat.completions.create({ model: 'tools', messages, tools });
  const call = r.choices[0].message.tool_calls[0];
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris' });
  assert.equal(r.choices[0].finish_reason, 'tool_calls');

  const stream = client.chat.completions.stream({ model: 'tools', messages, tools });
  const final = await stream.finalChatCompletion();
  const streamed = final.choices[0].message.tool_calls[0];
  assert.equal(streamed.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(streamed.function.arguments), { city: 'Paris' });
});

test('an upstream error surfaces as APIError with our status and code', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'broken', messages }),
    (e) => {
      assert.ok(e instanceof OpenAI.APIError, `not an APIError: ${e}`);
      assert.equal(e.status, 400);
      assert.equal(e.code, 'err_bad_request');
      assert.match(e.message, /max_tokens is too large/);
      return true;
    });
});

test('an unknown model is a 404 NotFoundError', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'nope', messages }), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError);
    assert.equal(e.code, 'err_model_not_found');
    return true;
  });
});

const weatherTool = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }];

test('a legacy function_call stream, assembled by the SDK stream helper into one tool call', async () => {
  const stream = client.chat.completions.stream({ model: 'legacy', messages, tools: weatherTool });
  const final = await stream.finalChatCompletion();
  const choice = final.choices[0];
  assert.equal(choice.finish_reason, 'tool_calls');
  assert.equal(choice.message.tool_calls.length, 1);
  const call = choice.message.tool_calls[0];
  assert.match(call.id, /^call_[A-Za-z0-9]{24}$/);
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  assert.deepEqual(JSON.parse(call.function.arguments),
    { city: 'Paris', unit: 'celsius', days: [1, 2, 3], note: 'twelve pieces or more' });
  assert.equal(final.model, 'legacy');
});

test('two calls that Ollama put at index 0 stay two calls in the SDK', async () => {
  const stream = client.chat.completions.stream({ model: 'ollama-style', messages, tools: weatherTool });
  const final = await stream.finalChatCompletion();
  const calls = final.choices[0].message.tool_calls;
  assert.equal(calls.length, 2);
  assert.deepEqual(calls.map((c) => c.function.name), ['get_weather', 'get_time']);
  assert.deepEqual(calls.map((c) => JSON.parse(c.function.arguments)), [{ city: 'Paris' }, { tz: 'CET' }]);
});
