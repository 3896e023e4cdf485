// examples/grafana/sigil-dashboard.json imports cleanly and every query uses metrics that exist:
// valid JSON, unique panel ids, a data source and a grid position per panel, and every
// `sigil_*` name in an expression (histogram suffixes stripped) defined in SigilMetrics.
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { SigilMetrics } from '../../src/telemetry/index.js';

const DASHBOARD = fileURLToPath(new URL('../../../examples/grafana/sigil-dashboard.json', import.meta.url));

/** Metric names a PromQL expression uses that SigilMetrics does not define. */
function unknownMetrics(expr: string, known: Set<string>): string[] {
  const used = expr.match(/\bsigil_[a-z0-9_]+/g) ?? [];
  return used.filter((name) => !known.has(name) && !known.has(name.replace(/_(bucket|sum|count)$/, '')));
}

t.test('the dashboard uses only metrics that exist', async (t) => {
  const dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8')) as { panels: any[]; templating?: { list: any[] } };
  const known = new Set((await new SigilMetrics().registry.getMetricsAsJSON()).map((m) => m.name));
  t.ok(known.has('sigil_bus_messages_total'), 'the registry lists the bus metric');
  const ids = dashboard.panels.map((p) => p.id);
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  let exprs = 0;
  for (const panel of dashboard.panels) {
    t.ok(panel.gridPos, `${panel.title}: gridPos`);
    if (panel.type !== 'row') t.ok(panel.datasource, `${panel.title}: datasource`);
    for (const target of panel.targets ?? []) {
      exprs++;
      t.same(unknownMetrics(String(target.expr), known), [], `${panel.title}: ${target.expr}`);
    }
  }
  for (const v of dashboard.templating?.list ?? []) {
    if (typeof v.definition === 'string') t.same(unknownMetrics(v.definition, known), [], `variable ${v.name}`);
  }
  t.ok(exprs >= 20, `${exprs} expressions checked`);
  t.ok(dashboard.panels.some((p) => (p.targets ?? []).some((x: any) => String(x.expr).includes('sigil_bus_messages_total'))), 'a bus panel');
  t.same(unknownMetrics('rate(sigil_requests_totl[5m])', known), ['sigil_requests_totl'], 'a misspelt metric is caught (positive control)');
});
