#!/usr/bin/env node
// The calling agent (a support assistant). It sends MCP JSON-RPC requests to the tool server
// by name ("mcp-tools") through its own Sigil sidecar's outbound listener, in plain HTTP. It
// holds no key and no certificate; when it works for a person it passes that person's bearer
// token, and its sidecar exchanges it at the broker for a delegation token addressed to the
// tool server (the route's `exchange` in caller-sidecar.yaml).
//
//   node caller.mjs list
//   node caller.mjs call <tool> ['<arguments as JSON>']
//
// Environment: SIGIL_OUTBOUND  the sidecar's outbound listener (default 127.0.0.1:15001)
//              USER_TOKEN      the person's access token (optional: without it, no person is
//                              behind the call)
// Prints the HTTP status and the JSON-RPC answer; exits 0 on a JSON-RPC result, 1 otherwise.
import { request } from 'node:http';

const ROUTE_HOST = 'mcp-tools';

function usage() {
  console.error("usage: node caller.mjs list | call <tool> ['<arguments as JSON>']");
  process.exit(2);
}

function rpcRequest(argv) {
  const [command, tool, args] = argv;
  if (command === 'list') return { method: 'tools/list', params: {} };
  if (command === 'call' && tool) return { method: 'tools/call', params: { name: tool, arguments: args ? JSON.parse(args) : {} } };
  return usage();
}

function post(outbound, body, token) {
  const sep = outbound.lastIndexOf(':');
  const text = JSON.stringify(body);
  const headers = {
    host: ROUTE_HOST,
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    'content-length': Buffer.byteLength(text),
    ...(token ? { authorization: `Bearer ${token}` } : {}),
  };
  return new Promise((resolve, reject) => {
    const req = request({ host: outbound.slice(0, sep), port: Number(outbound.slice(sep + 1)), method: 'POST', path: '/mcp', headers }, (res) => {
      let answer = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (answer += c));
      res.on('end', () => {
        let parsed = answer;
        try {
          parsed = JSON.parse(answer);
        } catch {
          // not JSON: shown as text
        }
        resolve({ status: res.statusCode, body: parsed });
      });
    });
    req.setTimeout(30_000, () => req.destroy(new Error('no answer within 30 s')));
    req.on('error', reject);
    req.end(text);
  });
}

const call = { jsonrpc: '2.0', id: 1, ...rpcRequest(process.argv.slice(2)) };
const { status, body } = await post(process.env.SIGIL_OUTBOUND || '127.0.0.1:15001', call, process.env.USER_TOKEN || undefined);
console.log(JSON.stringify({ status, ...(typeof body === 'object' && body !== null ? body : { body }) }, null, 2));
process.exit(status === 200 && body?.result !== undefined ? 0 : 1);
