// The planner agent (Compose example). Every few seconds it asks the researcher for research on
// behalf of alice, and announces the task on the signed bus. It holds no key, no certificate and
// no SPIFFE ID: it speaks plain HTTP to its own sidecar on loopback, which does mTLS, the token
// exchange at the broker, the policy check and the signing. The only credential it sees is the
// user token it passes on. No dependencies: Node 20's standard library only.
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';

const OUTBOUND = hostPort(process.env.SIDECAR_OUTBOUND ?? '127.0.0.1:15001');
const BUS = process.env.SIDECAR_BUS ?? '127.0.0.1:15002';
const RESEARCHER = process.env.RESEARCHER_HOST ?? 'researcher';
const TOKEN_FILE = process.env.USER_TOKEN_FILE ?? '/var/lib/sigil/user/token';
const INTERVAL_MS = Number(process.env.INTERVAL_MS ?? 5000);
const TOPICS = ['spiffe', 'cedar', 'rfc8693'];

let round = 0;
let stopping = false;
process.on('SIGTERM', () => {
  stopping = true;
  process.exit(0);
});

log({ msg: 'planner started', outbound: `${OUTBOUND.host}:${OUTBOUND.port}`, bus: BUS, researcher: RESEARCHER });
while (!stopping) {
  round += 1;
  const topic = TOPICS[round % TOPICS.length];
  await announce(topic).catch((err) => log({ msg: 'bus publish failed', error: err.message }));
  await askResearcher(topic).catch((err) => log({ msg: 'call failed', error: err.message }));
  await new Promise((resolve) => setTimeout(resolve, INTERVAL_MS));
}

/** GET http://researcher/v1/research through the sidecar, as alice when her token is there. */
async function askResearcher(topic) {
  const token = await readFile(TOKEN_FILE, 'utf8').then((t) => t.trim(), () => '');
  const headers = { host: RESEARCHER, ...(token ? { authorization: `Bearer ${token}` } : {}) };
  const { status, body } = await get(`/v1/research?topic=${encodeURIComponent(topic)}`, headers);
  // 200: the researcher's answer. 403/401/502: the sidecars' refusal, with its reason code.
  log({ msg: 'research', round, topic, asAlice: token !== '', status, answer: body });
}

/** POST /bus/publish on the local bus API: the sidecar signs the message and sends it over NATS. */
async function announce(topic) {
  const res = await fetch(`http://${BUS}/bus/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ subject: 'tasks.planned', data: { round, topic } }),
  });
  const body = await res.json().catch(() => null);
  if (res.status !== 202) log({ msg: 'bus publish refused', status: res.status, answer: body });
}

function get(path, headers) {
  return new Promise((resolve, reject) => {
    const req = request({ host: OUTBOUND.host, port: OUTBOUND.port, path, headers, timeout: 10_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode, body: parseJson(text) }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function hostPort(value) {
  const at = value.lastIndexOf(':');
  return { host: value.slice(0, at), port: Number(value.slice(at + 1)) };
}

function log(fields) {
  console.log(JSON.stringify({ time: new Date().toISOString(), agent: 'planner', ...fields }));
}
