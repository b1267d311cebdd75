// Support staff reading the admin API while customers provision: paging through tenants,
// opening one, reading its audit trail, and querying its sync journal (SPEC §7), as an open
// workload.
//
//   tenant_list   GET /admin/v1/tenants?limit=50, following next_cursor for up to PAGES pages
//   tenant_get    GET /admin/v1/tenants/{slug}
//   audit         GET /admin/v1/audit?tenant={slug}&limit=50
//   journal       one of JOURNAL_PATHS, placeholders filled from the seed file
//
// JOURNAL_PATHS is a comma-separated list of path templates under BASE_URL with {slug},
// {user_id} and {group_id} placeholders; the default names the journal queries support asks
// most (recent entries, failures, one user, one group), to be aligned with the admin API's
// published paths. The bearer token comes from ADMIN_TOKEN (a `roster:read` JWT).
//
// Settings (environment): BASE_URL, SEED, ADMIN_TOKEN, RATE (requests/s), DURATION, RAMP,
// MIX ("list:20,get:30,audit:20,journal:30"; a share of 0 leaves a flow out), PAGES, P95_MS, P99_MS, DROPPED_MAX, MAX_VUS.

import http from 'k6/http';
import { check } from 'k6';
import { SharedArray } from 'k6/data';

import { arrivalScenario, envNumber, envString, opThresholds } from './lib/common.js';

const BASE_URL = envString('BASE_URL', 'http://127.0.0.1:18080');
const SEED = envString('SEED', '../results/seed.json');
const ADMIN_TOKEN = envString('ADMIN_TOKEN', '');
const RATE = envNumber('RATE', 50);
const DURATION = envString('DURATION', '60s');
const RAMP = envString('RAMP', '0s');
const PAGES = envNumber('PAGES', 3);
const P95_MS = envNumber('P95_MS', 50);
const P99_MS = envNumber('P99_MS', 100);
const DROPPED_MAX = envNumber('DROPPED_MAX', 0);
const MAX_VUS = envNumber('MAX_VUS', 100);
const MIX = envString('MIX', 'list:20,get:30,audit:20,journal:30');
const JOURNAL_PATHS = envString(
  'JOURNAL_PATHS',
  [
    '/admin/v1/tenants/{slug}/journal?limit=50',
    '/admin/v1/tenants/{slug}/journal?outcome=failed&limit=50',
    '/admin/v1/tenants/{slug}/journal?user_id={user_id}&limit=50',
    '/admin/v1/tenants/{slug}/journal?group_id={group_id}&limit=50',
  ].join(','),
)
  .split(',')
  .map((p) => p.trim())
  .filter((p) => p.length > 0);

// A tenant listing of PAGES pages counts as up to PAGES requests.
const FLOWS = {
  list: { requests: PAGES, ops: ['tenant_list'] },
  get: { requests: 1, ops: ['tenant_get'] },
  audit: { requests: 1, ops: ['audit'] },
  journal: { requests: 1, ops: ['journal'] },
};

const tenants = new SharedArray('tenants', () => JSON.parse(open(SEED)).tenants);

function buildOptions() {
  const shares = {};
  for (const part of MIX.split(',')) {
    const [flow, share] = part.split(':').map((s) => s.trim());
    if (!FLOWS[flow]) throw new Error(`MIX names an unknown flow "${flow}"`);
    shares[flow] = Number(share);
  }
  const total = Object.values(shares).reduce((a, b) => a + b, 0);
  const scenarios = {};
  const ops = [];
  for (const [flow, share] of Object.entries(shares)) {
    if (share <= 0) continue;
    const perSecond = (RATE * share) / total / FLOWS[flow].requests;
    scenarios[flow] = arrivalScenario(flow, perSecond, {
      duration: DURATION,
      ramp: RAMP,
      maxVus: MAX_VUS,
    });
    ops.push(...FLOWS[flow].ops);
  }
  return {
    scenarios,
    thresholds: {
      http_req_failed: ['rate==0'],
      checks: ['rate==1'],
      dropped_iterations: [`count<=${DROPPED_MAX}`],
      ...opThresholds(ops, P95_MS, P99_MS),
    },
    summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'],
  };
}

export const options = buildOptions();

export function setup() {
  if (!ADMIN_TOKEN) throw new Error('ADMIN_TOKEN must hold an admin API bearer token');
  if (tenants.length === 0) throw new Error(`the seed file ${SEED} has no tenants`);
}

function params(op) {
  return { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` }, tags: { op, name: op } };
}

function randomItem(items) {
  return items[Math.floor(Math.random() * items.length)];
}

export function list() {
  let url = `${BASE_URL}/admin/v1/tenants?limit=50`;
  for (let page = 0; page < PAGES; page += 1) {
    const res = http.get(url, params('tenant_list'));
    const ok = check(res, { 'tenant_list: 200 items': (r) => r.status === 200 && r.body.includes('"items"') });
    if (!ok) return;
    const next = res.json('next_cursor');
    if (!next) return;
    url = `${BASE_URL}/admin/v1/tenants?limit=50&cursor=${encodeURIComponent(next)}`;
  }
}

export function get() {
  const tenant = randomItem(tenants);
  const res = http.get(`${BASE_URL}/admin/v1/tenants/${tenant.slug}`, params('tenant_get'));
  check(res, { 'tenant_get: 200 the tenant': (r) => r.status === 200 && r.body.includes(tenant.slug) });
}

export function audit() {
  const tenant = randomItem(tenants);
  const res = http.get(
    `${BASE_URL}/admin/v1/audit?tenant=${tenant.slug}&limit=50`,
    params('audit'),
  );
  check(res, { 'audit: 200 items': (r) => r.status === 200 && r.body.includes('"items"') });
}

export function journal() {
  const tenant = randomItem(tenants);
  const path = randomItem(JOURNAL_PATHS)
    .replace('{slug}', tenant.slug)
    .replace('{user_id}', randomItem(tenant.users).id)
    .replace('{group_id}', randomItem(tenant.groups).id);
  const res = http.get(`${BASE_URL}${path}`, params('journal'));
  check(res, { 'journal: 200': (r) => r.status === 200 });
}
