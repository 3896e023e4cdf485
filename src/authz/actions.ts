// JSON-RPC methods → Cedar actions. The schema (schema/sigil.cedarschema) declares the known
// methods; anything else maps to `mcp.other` / `a2a.other` with the real method name in
// `context.jsonrpc.method`, so a policy can still name it and nothing falls through unchecked.
import type { Action } from './decision.js';

const MCP_METHODS = new Set([
  'initialize',
  'ping',
  'tools/list',
  'tools/call',
  'resources/list',
  'resources/templates/list',
  'resources/read',
  'resources/subscribe',
  'resources/unsubscribe',
  'prompts/list',
  'prompts/get',
  'completion/complete',
  'logging/setLevel',
]);

const A2A_METHODS = new Set([
  'message/send',
  'message/stream',
  'tasks/get',
  'tasks/cancel',
  'tasks/resubscribe',
  'tasks/pushNotificationConfig/set',
  'tasks/pushNotificationConfig/get',
  'tasks/pushNotificationConfig/list',
  'tasks/pushNotificationConfig/delete',
  'agent/getAuthenticatedExtendedCard',
]);

/** The Cedar action for a JSON-RPC method: A2A methods by name, everything else MCP. */
export function actionForJsonRpcMethod(method: string): Action {
  if (A2A_METHODS.has(method)) return `a2a.${method}`;
  if (MCP_METHODS.has(method)) return `mcp.${method}`;
  if (method.startsWith('notifications/')) return 'mcp.notifications';
  return 'mcp.other';
}
