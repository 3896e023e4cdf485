// JSON-RPC call extraction, refusal answers and tools/list filtering (pure vectors).
import t from 'tap';
import type { Decision } from '../../src/authz/index.js';
import {
  batchRejectedReply,
  deniedReply,
  duplicateMember,
  filterSseEvent,
  filterToolsListResult,
  judgeCalls,
  MAX_BATCH_ELEMENTS,
  parseJsonRpc,
  SseSplitter,
  type JsonRpcCall,
  type JsonRpcParse,
} from '../../src/proxy/jsonrpc.js';

const j = (v: unknown): string => JSON.stringify(v);

function calls(p: JsonRpcParse): { batch: boolean; calls: JsonRpcCall[] } {
  if (p.kind !== 'calls') throw new Error(`expected calls, got ${j(p)}`);
  return p;
}

function invalid(p: JsonRpcParse): any {
  if (p.kind !== 'invalid') throw new Error(`expected invalid, got ${j(p)}`);
  return p.reply;
}

t.test('single requests and notifications', async (t) => {
  t.same(parseJsonRpc(j({ jsonrpc: '2.0', id: 1, method: 'tools/list' })), { kind: 'calls', batch: false, calls: [{ id: 1, notification: false, method: 'tools/list' }] });
  t.same(parseJsonRpc(Buffer.from(j({ jsonrpc: '2.0', id: 'a', method: 'tools/call', params: { name: 'search', arguments: { q: 1 } } }))), {
    kind: 'calls',
    batch: false,
    calls: [{ id: 'a', notification: false, method: 'tools/call', tool: 'search' }],
  });
  t.same(calls(parseJsonRpc(j({ jsonrpc: '2.0', method: 'notifications/initialized' }))).calls, [{ notification: true, method: 'notifications/initialized' }], 'notification: no id');
  t.same(calls(parseJsonRpc(j({ jsonrpc: '2.0', id: null, method: 'ping' }))).calls, [{ id: null, notification: false, method: 'ping' }], 'id null is a request, not a notification');
  t.same(calls(parseJsonRpc(j({ jsonrpc: '2.0', id: 7, method: 'message/send', params: [1] }))).calls, [{ id: 7, notification: false, method: 'message/send' }], 'array params');
  t.same(calls(parseJsonRpc(`  \n${j({ jsonrpc: '2.0', id: 1, method: 'x' })}\n`)).calls.length, 1, 'surrounding whitespace');
});

t.test('not JSON-RPC requests: none', async (t) => {
  for (const body of [
    j({ jsonrpc: '2.0', id: 1, result: { tools: [] } }),
    j({ jsonrpc: '2.0', id: 1, error: { code: -1, message: 'x' } }),
    j([{ jsonrpc: '2.0', id: 1, result: {} }, { jsonrpc: '2.0', id: 2, error: { code: 1, message: '' } }]),
    j({ name: 'widget', price: 3 }),
    j({ method: 'card', amount: 5 }),
    j([1, 2, 3]),
    j([{ a: 1 }]),
    j('string'),
    '42',
    'null',
    '',
    '   \n',
  ]) {
    t.same(parseJsonRpc(body), { kind: 'none' }, body || '(empty)');
  }
});

t.test('malformed JSON: -32700, id null', async (t) => {
  for (const body of ['{', '{"jsonrpc":"2.0",', 'not json', '{"a":1} {"b":2}', "{'jsonrpc':'2.0'}"]) {
    t.match(invalid(parseJsonRpc(body)), { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error', data: { reason: 'jsonrpc_invalid' } } }, body);
  }
  const bom = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(j({ jsonrpc: '2.0', id: 1, method: 'tools/list' }))]);
  t.match(invalid(parseJsonRpc(bom)), { error: { code: -32700 } }, 'a BOM is refused, not skipped');
  const utf16 = Buffer.from(j({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'x' } }), 'utf16le');
  t.match(invalid(parseJsonRpc(utf16)), { error: { code: -32700 } }, 'UTF-16 is refused');
  t.match(invalid(parseJsonRpc(Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]))), { error: { code: -32700, data: { detail: /UTF-8/ } } }, 'invalid UTF-8');
});

t.test('invalid requests: -32600 / -32602', async (t) => {
  t.match(invalid(parseJsonRpc('[]')), { id: null, error: { code: -32600, message: 'Invalid Request' } }, 'empty batch: one error object');
  t.notOk(Array.isArray(invalid(parseJsonRpc('[]'))));
  t.match(invalid(parseJsonRpc(j({ jsonrpc: '1.0', id: 3, method: 'x' }))), { id: 3, error: { code: -32600 } }, 'wrong version, id kept');
  t.match(invalid(parseJsonRpc(j({ jsonrpc: 2, id: 3, method: 'x' }))), { error: { code: -32600 } }, 'version as a number');
  t.match(invalid(parseJsonRpc(j({ jsonrpc: '2.0', id: 1, method: 5 }))), { id: 1, error: { code: -32600 } }, 'method not a string');
  t.match(invalid(parseJsonRpc(j({ jsonrpc: '2.0', id: { a: 1 }, method: 'x' }))), { id: null, error: { code: -32600 } }, 'object id');
  t.match(invalid(parseJsonRpc(j({ jsonrpc: '2.0', id: 1, method: 'x', params: 'str' }))), { error: { code: -32600 } }, 'scalar params');
  t.match(invalid(parseJsonRpc(j({ jsonrpc: '2.0', id: 1 }))), { error: { code: -32600 } }, 'neither request nor response');
  t.match(invalid(parseJsonRpc(j({ jsonrpc: '2.0', id: 1, method: 'x', result: 1 }))), { error: { code: -32600 } }, 'request with result');
  // JSON-RPC 1.0 shape: lenient servers execute it, so it is not "none".
  t.match(invalid(parseJsonRpc(j({ method: 'tools/call', params: { name: 'delete' }, id: 1 }))), { id: 1, error: { code: -32600 } }, 'no jsonrpc member');
  for (const [label, params] of [
    ['no params', undefined],
    ['array params', ['search']],
    ['numeric name', { name: 42 }],
    ['null name', { name: null }],
    ['missing name', { arguments: {} }],
  ] as const) {
    const body = params === undefined ? { jsonrpc: '2.0', id: 9, method: 'tools/call' } : { jsonrpc: '2.0', id: 9, method: 'tools/call', params };
    t.match(invalid(parseJsonRpc(j(body))), { id: 9, error: { code: -32602, message: 'Invalid params', data: { reason: 'jsonrpc_invalid' } } }, `tools/call: ${label}`);
  }
});

t.test('member-name ambiguity is refused (case folding, duplicates)', async (t) => {
  t.match(invalid(parseJsonRpc('{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call","params":{"name":"delete"}}')), { error: { code: -32700 } }, 'method + Method');
  t.match(invalid(parseJsonRpc('{"jsonrpc":"2.0","id":1,"METHOD":"tools/call"}')), { error: { code: -32600 } }, 'only METHOD');
  t.match(invalid(parseJsonRpc('{"JSONRPC":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}')), { error: { code: -32600 } }, 'JSONRPC');
  t.match(invalid(parseJsonRpc('{"j\u017Fonrpc":"2.0","id":1,"method":"x"}')), { error: { code: -32600 } }, 'long s folds to s');
  t.match(invalid(parseJsonRpc('{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list"}')), { error: { code: -32700, data: { detail: /method/ } } }, 'exact duplicate');
  t.match(invalid(parseJsonRpc('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","Name":"delete"}}')), { error: { code: -32700 } }, 'name + Name');
  t.match(invalid(parseJsonRpc('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"delete"}}')), { id: 1, error: { code: -32602 } }, 'only Name');
  t.match(invalid(parseJsonRpc('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","\\u006eame":"delete"}}')), { error: { code: -32700 } }, 'escaped duplicate');
  t.same(duplicateMember('{"a":{"b":1,"c":2},"b":[{"b":1},{"b":2}]}'), undefined, 'same name in different objects is fine');
  t.equal(duplicateMember('{"a":"x\\"b","b":1,"B":2}'), 'B', 'escaped quotes inside values do not confuse the scanner');
  t.same(parseJsonRpc('{"price":1,"price":2}'), { kind: 'none' }, 'duplicates in non-JSON-RPC bodies are not our business');
});

t.test('batches', async (t) => {
  const b = [
    { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'search' } },
    { jsonrpc: '2.0', method: 'notifications/progress' },
    { jsonrpc: '2.0', id: 2, result: { ok: true } },
    { jsonrpc: '2.0', id: 'x', method: 'tools/list' },
  ];
  t.same(parseJsonRpc(j(b)), {
    kind: 'calls',
    batch: true,
    calls: [
      { id: 1, notification: false, method: 'tools/call', tool: 'search' },
      { notification: true, method: 'notifications/progress' },
      { id: 'x', notification: false, method: 'tools/list' },
    ],
  }, 'responses inside a batch are not calls');
  t.same(calls(parseJsonRpc(j([b[0]]))).batch, true, 'a one-element batch is still a batch');
  const reply = invalid(parseJsonRpc(j([b[0], 1, { jsonrpc: '2.0', id: 5, method: 'tools/call', params: {} }, b[1]])));
  t.same(reply, [
    { jsonrpc: '2.0', id: 1, error: { code: -32043, message: 'not executed: batch rejected', data: { reason: 'batch_rejected', policies: [] } } },
    { jsonrpc: '2.0', id: null, error: { code: -32600, message: 'Invalid Request', data: { reason: 'jsonrpc_invalid', detail: 'a batch element is not an object' } } },
    { jsonrpc: '2.0', id: 5, error: { code: -32602, message: 'Invalid params', data: { reason: 'jsonrpc_invalid', detail: 'tools/call needs params.name (a string)' } } },
  ], 'invalid elements: one entry per request element, nothing for notifications');
  t.match(invalid(parseJsonRpc(j([b[0], { foo: 1 }]))), [{ error: { code: -32043 } }, { error: { code: -32600 } }], 'a non-JSON-RPC object inside a JSON-RPC batch');
  const many = (n: number) => j(Array.from({ length: n }, (_, i) => ({ jsonrpc: '2.0', id: i, method: 'ping' })));
  t.equal(calls(parseJsonRpc(many(MAX_BATCH_ELEMENTS))).calls.length, MAX_BATCH_ELEMENTS, 'a batch at the limit');
  t.match(invalid(parseJsonRpc(many(MAX_BATCH_ELEMENTS + 1))), { id: null, error: { code: -32600, data: { detail: /at most 256/ } } }, 'one more: refused as a whole');
});

function decision(allowed: boolean, policies: string[] = []): Decision {
  return { allowed, reason: allowed ? 'allowed' : 'policy_denied', policies, wouldDeny: false, policyVersion: 'v', request: {} as Decision['request'] };
}

t.test('denial replies and batch semantics', async (t) => {
  const call: JsonRpcCall = { id: 4, notification: false, method: 'tools/call', tool: 'delete' };
  t.same(deniedReply(call, decision(false, ['no-delete'])), {
    jsonrpc: '2.0',
    id: 4,
    error: { code: -32043, message: 'forbidden: policy_denied', data: { reason: 'policy_denied', policies: ['no-delete'] } },
  });
  t.same(batchRejectedReply({ id: 'z', notification: false, method: 'ping' }), {
    jsonrpc: '2.0',
    id: 'z',
    error: { code: -32043, message: 'not executed: batch rejected', data: { reason: 'batch_rejected', policies: [] } },
  });

  const single = { batch: false, calls: [call] };
  t.match(judgeCalls(single, () => decision(true)), { forward: true });
  t.match(judgeCalls(single, () => decision(false, ['p'])), { forward: false, reply: { id: 4, error: { code: -32043, data: { policies: ['p'] } } } });

  const batch = {
    batch: true,
    calls: [
      { id: 1, notification: false, method: 'tools/call', tool: 'search' },
      { notification: true, method: 'notifications/x' },
      { id: 2, notification: false, method: 'tools/call', tool: 'delete' },
      { id: 3, notification: false, method: 'ping' },
    ],
  };
  const seen: string[] = [];
  const v = judgeCalls(batch, (c) => {
    seen.push(c.method + (c.tool ?? ''));
    return decision(c.tool !== 'delete', c.tool === 'delete' ? ['forbid-delete'] : ['ok']);
  });
  t.same(seen, ['tools/callsearch', 'notifications/x', 'tools/calldelete', 'ping'], 'every call is evaluated, even after a denial');
  t.equal(v.forward, false);
  if (!v.forward) {
    t.same(v.reply, [batchRejectedReply(batch.calls[0]!), deniedReply(batch.calls[2]!, decision(false, ['forbid-delete'])), batchRejectedReply(batch.calls[3]!)]);
    t.same(v.denied.policies, ['forbid-delete']);
  }
  t.match(judgeCalls(batch, () => decision(true)), { forward: true }, 'all allowed: forwarded');

  const notif = judgeCalls({ batch: false, calls: [{ notification: true, method: 'notifications/x' }] }, () => decision(false));
  t.match(notif, { forward: false, reply: undefined }, 'a refused notification has no JSON-RPC answer');
  const notifBatch = judgeCalls({ batch: true, calls: [{ notification: true, method: 'a' }, { notification: true, method: 'b' }] }, (c) => decision(c.method === 'a'));
  t.match(notifBatch, { forward: false, reply: undefined }, 'a batch of notifications neither');
});

const toolsResult = (id: unknown, names: unknown[]) => ({ jsonrpc: '2.0', id, result: { tools: names.map((n) => (typeof n === 'object' ? n : { name: n, description: `tool ${String(n)}` })), nextCursor: 'c' } });
const only = (...names: string[]) => (name: string) => names.includes(name);

t.test('tools/list filtering: JSON', async (t) => {
  const body = j(toolsResult(1, ['search', 'fetch', 'delete']));
  const out = filterToolsListResult(body, 'application/json; charset=utf-8', only('search'));
  t.ok(out);
  t.equal(out!.contentType, 'application/json; charset=utf-8');
  t.same(JSON.parse(out!.body.toString()), { jsonrpc: '2.0', id: 1, result: { tools: [{ name: 'search', description: 'tool search' }], nextCursor: 'c' } }, 'other result members kept');
  t.equal(filterToolsListResult(body, 'application/json', only('search', 'fetch', 'delete')), undefined, 'nothing to remove: unchanged');
  t.equal(filterToolsListResult(j({ jsonrpc: '2.0', id: 1, error: { code: 1, message: 'no' } }), 'application/json', only()), undefined, 'error answer unchanged');
  t.same(JSON.parse(filterToolsListResult(body, 'application/json', only())!.body.toString()).result.tools, [], 'nothing allowed: empty list');

  const odd = j(toolsResult(2, ['search', { description: 'unnamed' }, { name: 5 }, { Name: 'search' }, 'x']));
  t.same(JSON.parse(filterToolsListResult(odd, 'application/json', () => true)!.body.toString()).result.tools, [{ name: 'search', description: 'tool search' }, { name: 'x', description: 'tool x' }], 'unnamed or ambiguously named tools are dropped');

  const batch = j([toolsResult(1, ['search', 'delete']), { jsonrpc: '2.0', id: 2, result: {} }]);
  t.same(JSON.parse(filterToolsListResult(batch, 'application/json', only('search'))!.body.toString()), [toolsResult(1, ['search']), { jsonrpc: '2.0', id: 2, result: {} }], 'batch answers');

  const ctx = { ids: [7], batch: false };
  for (const [label, text] of [
    ['unparseable', '{"jsonrpc":"2.0","id":7,"result":{"tools":['],
    ['tools not an array', j({ jsonrpc: '2.0', id: 7, result: { tools: 'search' } })],
    ['Tools spelled differently', j({ jsonrpc: '2.0', id: 7, result: { Tools: [{ name: 'delete' }] } })],
    ['duplicate members', '{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"search","name":"delete"}]}}'],
  ] as const) {
    const r = filterToolsListResult(text, 'application/json', only('search'), ctx);
    t.same(JSON.parse(r!.body.toString()), { jsonrpc: '2.0', id: 7, error: { code: -32603, message: 'tools/list response could not be filtered', data: { reason: 'internal_error' } } }, `fail closed: ${label}`);
  }
  t.match(JSON.parse(filterToolsListResult('garbage', 'application/json', only(), { ids: [1, 2], batch: true })!.body.toString()), [{ id: 1, error: { code: -32603 } }, { id: 2, error: { code: -32603 } }], 'batch: one error per id');
  const other = filterToolsListResult(body, 'text/plain', only('search'));
  t.equal(other!.contentType, 'application/json', 'JSON under another content type is filtered too');
  t.equal(JSON.parse(other!.body.toString()).result.tools.length, 1);
  t.equal(filterToolsListResult('', 'text/plain', only()), undefined, 'empty body of another type: unchanged');
  t.equal(JSON.parse(filterToolsListResult('<html>', 'text/html', only())!.body.toString()).error.code, -32603, 'non-JSON 2xx answer: fail closed');
});

t.test('SSE splitting', async (t) => {
  const s = new SseSplitter();
  const events = [...s.push('event: message\r\ndata: {"a"'), ...s.push(':1}\r'), ...s.push('\n\r\n: comment\n\nid: 5\rdata: x\r\r'), ...s.push('data: tail')];
  t.same(
    events.map((e) => e.lines),
    [['event: message', 'data: {"a":1}'], [': comment'], ['id: 5', 'data: x']],
    'CRLF, LF and CR line ends; a CR at a chunk end waits for a possible LF',
  );
  t.equal(events.map((e) => e.raw).join(''), 'event: message\r\ndata: {"a":1}\r\n\r\n: comment\n\nid: 5\rdata: x\r\r', 'raw text kept exactly');
  t.same(s.flush(), [{ raw: 'data: tail', lines: ['data: tail'] }], 'unterminated last event at end of stream');
  const cr = new SseSplitter();
  t.same(cr.push('data: a\r\r'), [], 'CR CR at the end is held (could be CR LF)');
  t.same(cr.flush().map((e) => e.lines), [['data: a']]);
});

t.test('tools/list filtering: SSE', async (t) => {
  const ev1 = `event: message\nid: 1\ndata: ${j({ jsonrpc: '2.0', method: 'notifications/progress', params: { p: 1 } })}\n\n`;
  const ev2 = `event: message\nid: 2\ndata: ${j(toolsResult(3, ['search', 'fetch', 'delete']))}\n\n`;
  const ping = ': keep-alive\n\n';
  const out = filterToolsListResult(ev1 + ping + ev2, 'text/event-stream', only('search', 'fetch'));
  t.ok(out);
  t.equal(out!.contentType, 'text/event-stream');
  const text = out!.body.toString();
  t.ok(text.startsWith(ev1 + ping), 'other events pass byte for byte');
  t.equal(text.slice((ev1 + ping).length), `event: message\nid: 2\ndata: ${j(toolsResult(3, ['search', 'fetch']))}\n\n`, 'the result event is rewritten, its fields kept');
  t.equal(filterToolsListResult(ev1 + ev2, 'text/event-stream', () => true), undefined, 'nothing removed: unchanged');

  // Data split over several data lines is joined with LF before parsing.
  const multi = `data: {"jsonrpc":"2.0","id":3,\ndata: "result":{"tools":[{"name":"a"},{"name":"b"}]}}\n\n`;
  t.equal(filterToolsListResult(multi, 'text/event-stream', only('a'))!.body.toString(), `data: ${j({ jsonrpc: '2.0', id: 3, result: { tools: [{ name: 'a' }] } })}\n\n`);
  const bad = filterToolsListResult('data: {"jsonrpc":"2.0","id":3,"result":{"tools":[\n\n', 'text/event-stream', only('a'), { ids: [3] });
  t.equal(bad!.body.toString(), `data: ${j({ jsonrpc: '2.0', id: 3, error: { code: -32603, message: 'tools/list response could not be filtered', data: { reason: 'internal_error' } } })}\n\n`, 'unparseable event data: fail closed in SSE framing');
  t.equal(filterSseEvent({ raw: 'event: x\n\n', lines: ['event: x'] }, only()), undefined, 'an event without data passes');
  t.equal(filterSseEvent({ raw: 'data:{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}]}}\n\n', lines: ['data:{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}]}}'] }, only()), `data: ${j({ jsonrpc: '2.0', id: 1, result: { tools: [] } })}\n\n`, 'data: without a space');
  const unterminated = filterToolsListResult(`data: ${j(toolsResult(1, ['a', 'b']))}`, 'text/event-stream', only('a'));
  t.equal(unterminated!.body.toString(), `data: ${j(toolsResult(1, ['a']))}\n\n`, 'an unterminated last event is filtered too');
});
