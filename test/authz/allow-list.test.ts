import t from 'tap';
import { agentResource, AllowListAuthorizer, DenyAllAuthorizer, DryRunAuthorizer, type AuthzRequest } from '../../src/authz/index.js';
import { SpiffeId } from '../../src/spiffe/index.js';

const own = SpiffeId.parse('spiffe://example.org/agent/self');
const inbound = (peer: string): AuthzRequest => ({ action: 'http', direction: 'inbound', principal: SpiffeId.parse(peer), resource: agentResource(own), peer: SpiffeId.parse(peer) });
const outbound = (peer: string): AuthzRequest => ({ action: 'connect', direction: 'outbound', principal: own, resource: agentResource(SpiffeId.parse(peer)), peer: SpiffeId.parse(peer) });

t.test('allow-list matches the peer on either direction', async (t) => {
  const authz = new AllowListAuthorizer(['spiffe://example.org/agent/a', 'spiffe://example.org/team/*', 'spiffe://partner.example/**']);
  t.same(authz.authorize(inbound('spiffe://example.org/agent/a')).policies, ['allow[0]']);
  t.ok(authz.authorize(inbound('spiffe://example.org/team/x')).allowed);
  t.ok(authz.authorize(inbound('spiffe://partner.example/a/b/c')).allowed);
  t.ok(authz.authorize(outbound('spiffe://example.org/agent/a')).allowed, 'outbound checks the server');
  for (const peer of ['spiffe://example.org/agent/b', 'spiffe://example.org/team/x/y', 'spiffe://example.org/agent/A', 'spiffe://other.org/agent/a']) {
    const d = authz.authorize(inbound(peer));
    t.notOk(d.allowed, `${peer} denied`);
    t.equal(d.reason, 'policy_denied');
  }
  t.notOk(authz.authorize(outbound('spiffe://example.org/agent/b')).allowed);
});

t.test('invalid entries are load errors naming the entry', async (t) => {
  t.throws(() => new AllowListAuthorizer(['spiffe://example.org/a', 'spiffe://Example.org/x']), /policy\.allow\[1\]/);
});

t.test('no policy denies everything; dry-run lets through but marks would-deny', async (t) => {
  const none = new DenyAllAuthorizer().authorize(inbound('spiffe://example.org/agent/a'));
  t.notOk(none.allowed);
  t.equal(none.reason, 'no_policy');
  const dry = new DryRunAuthorizer(new AllowListAuthorizer(['spiffe://example.org/agent/a']));
  const denied = dry.authorize(inbound('spiffe://example.org/agent/b'));
  t.ok(denied.allowed);
  t.ok(denied.wouldDeny);
  t.equal(denied.reason, 'policy_denied');
  const allowed = dry.authorize(inbound('spiffe://example.org/agent/a'));
  t.ok(allowed.allowed);
  t.notOk(allowed.wouldDeny);
});
