// Microsoft Entra provisioning cycles of many tenants at once, as an open workload.
//
// Each tenant is one Entra provisioning job with Roster's configuration: users matched on
// emails[type eq "work"].value and created only, groups matched on externalId and updated only
// (SPEC §2, reference/entra-client.md §2-5). Requests arrive at a fixed rate whatever the server
// does (arrival-rate executors), the way many independent Entra jobs arrive. Four flows, each
// its own scenario, each request tagged with its operation (`op`):
//
//   probe      Test Connection / start-of-cycle probe: a random GUID in the matching filter,
//              percent-encoded like Entra; 200 with an empty ListResponse         op=probe
//   provision  a new user: the match query (no match), then POST /Users with
//              Entra's body                                          op=user_match, user_create
//   group      the group match (excludedAttributes=members, externalId filter), then a PATCH
//              adding a batch of members ({"op":"Add","path":"members",...}), 204
//                                                                   op=group_match, group_patch
//   rematch    steady-state cycles: the match query for a user who exists     op=user_rematch
//
// Tenants, keys, groups and users come from the seed file written by load-tests/seed.py.
// Half the tenants use the per-tenant base URL (/scim/v2/<slug>), half the key's (/scim/v2);
// every fourth carries Entra's `aadOptscim062020` flag in its Tenant URL.
//
// Settings (environment): BASE_URL, SEED, RATE (requests/s, all flows together), DURATION,
// RAMP (ramp-up before DURATION; 0s = constant rate), MIX (share of requests per flow, e.g.
// "probe:5,provision:20,group:30,rematch:45"), BATCH (members per PATCH), P95_MS and P99_MS
// (per-operation thresholds), DROPPED_MAX (iterations k6 may fail to start), MAX_VUS,
// VU_SECONDS (how long an iteration may take when sizing each flow's VUs; default 0.2),
// RUN_ID (makes created users unique across runs), BURST (iterations of one tenant's cycle each
// VU runs in a row; default 1: every iteration picks a random tenant).
//
// VISIT=1 replaces the open workload with one pass over the tenants: every tenant runs each flow
// once, VISIT_VUS (default 8) tenants at a time. It stands for the cycle a long-running server
// has already served for each of its tenants, so that a measurement that follows sees the
// steady state rather than every tenant's first request on a fresh server.
//
// FAULTS=1 (the `faults` profile, while a dependency is being broken): a 503 that carries
// `Retry-After` is an accepted answer (Entra retries it later) and ends the flow; a 503 without
// it, or any other unexpected status, counts in `scim_unexpected` / `scim_503_no_retry_after`,
// whose thresholds are zero. Every write and every 503 is logged as one JSON line on the console
// (run k6 with K6_LOG_FORMAT=raw K6_CONSOLE_OUTPUT=FILE) so the runner can check afterwards that
// no acknowledged write was lost and retry the refused creates as Entra would. Each request
// carries an `X-Request-Id` of RUN_ID, the VU and a sequence number, which Roster keeps in its
// journal, so the runner can tell whether every request was journaled.
// REQUEST_TIMEOUT (default 60s) bounds every request; a request cut by it fails the run.

import http from 'k6/http';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { SharedArray } from 'k6/data';
import exec from 'k6/execution';

import {
  arrivalScenario,
  envNumber,
  envString,
  guid,
  opThresholds,
  sample,
} from './lib/common.js';

const BASE_URL = envString('BASE_URL', 'http://127.0.0.1:18080');
const SEED = envString('SEED', '../results/seed.json');
const RATE = envNumber('RATE', 100);
const DURATION = envString('DURATION', '60s');
const RAMP = envString('RAMP', '0s');
const BATCH = envNumber('BATCH', 5);
const P95_MS = envNumber('P95_MS', 25);
const P99_MS = envNumber('P99_MS', 50);
const DROPPED_MAX = envNumber('DROPPED_MAX', 0);
const MAX_VUS = envNumber('MAX_VUS', 300);
const BURST = Math.max(1, envNumber('BURST', 1));
const VU_SECONDS = envNumber('VU_SECONDS', 0.2);
const MIX = envString('MIX', 'probe:5,provision:20,group:30,rematch:45');
const FAULTS = envString('FAULTS', '') !== '';
const REQUEST_TIMEOUT = envString('REQUEST_TIMEOUT', '60s');
const REQUEST_ID_PREFIX = envString('RUN_ID', 'k6');
const VISIT = envString('VISIT', '') !== '';
const VISIT_VUS = envNumber('VISIT_VUS', 8);
let requestSeq = 0;

// Under FAULTS a 503 is an answer the client is meant to retry, not a failed request.
if (FAULTS) {
  http.setResponseCallback(http.expectedStatuses({ min: 200, max: 399 }, 503));
}
const unavailable = new Counter('scim_503');
const unavailableWithoutRetryAfter = new Counter('scim_503_no_retry_after');
const unavailableDuration = new Trend('scim_503_duration', true);
const unexpected = new Counter('scim_unexpected');

const PATCH_OP = 'urn:ietf:params:scim:api:messages:2.0:PatchOp';
const USER_SCHEMA = 'urn:ietf:params:scim:schemas:core:2.0:User';
const ENTERPRISE = 'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User';

// Requests each flow makes per iteration, and the operations it tags.
const FLOWS = {
  probe: { requests: 1, ops: ['probe'] },
  provision: { requests: 2, ops: ['user_match', 'user_create'] },
  group: { requests: 2, ops: ['group_match', 'group_patch'] },
  rematch: { requests: 1, ops: ['user_rematch'] },
};

const tenants = new SharedArray('tenants', () => JSON.parse(open(SEED)).tenants);

function parseMix(raw) {
  const shares = {};
  for (const part of raw.split(',')) {
    const [flow, share] = part.split(':');
    if (!FLOWS[flow.trim()]) {
      throw new Error(`MIX names an unknown flow "${flow}"`);
    }
    shares[flow.trim()] = Number(share);
  }
  return shares;
}

/** One pass over the tenants, each running every flow once (VISIT=1). */
function visitOptions() {
  return {
    scenarios: {
      visit: {
        executor: 'shared-iterations',
        exec: 'visit',
        vus: Math.min(VISIT_VUS, tenants.length),
        iterations: tenants.length,
        maxDuration: '1h',
      },
    },
    thresholds: { http_req_failed: ['rate==0'], checks: ['rate==1'] },
    systemTags: ['status', 'method', 'name', 'scenario', 'check', 'error', 'error_code'],
  };
}

function buildOptions() {
  if (VISIT) return visitOptions();
  const shares = parseMix(MIX);
  const total = Object.values(shares).reduce((a, b) => a + b, 0);
  const scenarios = {};
  const ops = [];
  for (const [flow, share] of Object.entries(shares)) {
    if (share <= 0) continue;
    const iterationsPerSecond = (RATE * share) / total / FLOWS[flow].requests;
    scenarios[flow] = arrivalScenario(flow, iterationsPerSecond, {
      duration: DURATION,
      ramp: RAMP,
      maxVus: MAX_VUS,
      vuSeconds: VU_SECONDS,
    });
    ops.push(...FLOWS[flow].ops);
  }
  return {
    scenarios,
    thresholds: {
      http_req_failed: ['rate==0'],
      checks: ['rate==1'],
      dropped_iterations: [`count<=${DROPPED_MAX}`],
      http_req_duration: [`p(99)<${P99_MS}`],
      ...opThresholds(ops, P95_MS, P99_MS),
      ...(FAULTS ? faultThresholds(ops) : {}),
    },
    summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'],
    // Every URL is unique (random GUIDs, new emails), so k6's default `url` tag made a new tag
    // set for nearly every sample; requests are told apart by `op` and `name` instead.
    systemTags: ['status', 'method', 'name', 'scenario', 'check', 'error', 'error_code',
      'expected_response'],
    discardResponseBodies: false,
  };
}

/** Under FAULTS: no 503 without Retry-After, no unexpected status; per-op 503 counts kept. */
function faultThresholds(ops) {
  const thresholds = {
    scim_503_no_retry_after: ['count==0'],
    scim_unexpected: ['count==0'],
    scim_503_duration: ['max>=0'],
  };
  for (const op of ops) {
    thresholds[`scim_503{op:${op}}`] = ['count>=0'];
  }
  return thresholds;
}

export const options = buildOptions();

export function setup() {
  if (tenants.length === 0) {
    throw new Error(`the seed file ${SEED} has no tenants`);
  }
  return { runId: envString('RUN_ID', String(Date.now())) };
}

// Reading an element of a SharedArray parses its JSON again on every access; at thousands of
// requests a second that parse was a large share of k6's CPU. Each VU keeps the tenants it has
// addressed (up to TENANT_MEMO, so 10,000 tenants do not make every VU hold all of them).
const TENANT_MEMO = 128;
const addressed = new Map();

// BURST > 1 shapes traffic the way Entra's jobs send it: a tenant's provisioning cycle is a run
// of requests from that tenant's job, not requests scattered one by one over all tenants. Each VU
// then stays with the tenant it picked for BURST iterations of its flow before picking another.
let burstTenant = null;
let burstLeft = 0;
// Under VISIT the tenant every flow of the current iteration addresses.
let visiting = null;

/** The tenant of the VU's current burst, or a new random one, with how Entra would address it. */
function pickTenant() {
  if (visiting !== null) return visiting;
  if (burstLeft > 0) {
    burstLeft -= 1;
    return burstTenant;
  }
  burstTenant = addressTenant(Math.floor(Math.random() * tenants.length));
  burstLeft = BURST - 1;
  return burstTenant;
}

function addressTenant(index) {
  const known = addressed.get(index);
  if (known !== undefined) return known;
  const tenant = tenants[index];
  const base = index % 2 === 0 ? `${BASE_URL}/scim/v2/${tenant.slug}` : `${BASE_URL}/scim/v2`;
  const flag = index % 4 === 3 ? 'aadOptscim062020&' : '';
  const headers = {
    Authorization: `Bearer ${tenant.key}`,
    'Content-Type': 'application/scim+json',
  };
  const addressing = { tenant, base, flag, headers };
  if (addressed.size < TENANT_MEMO) addressed.set(index, addressing);
  return addressing;
}

function params(headers, op) {
  if (FAULTS) {
    requestSeq += 1;
    const id = `${REQUEST_ID_PREFIX}-${exec.vu.idInTest}-${requestSeq}`;
    headers = { ...headers, 'X-Request-Id': id };
  }
  return { headers, tags: { op, name: op }, timeout: REQUEST_TIMEOUT };
}

/** One line of the FAULTS write log. */
function record(entry) {
  console.log(JSON.stringify({ ts: Date.now(), ...entry }));
}

/**
 * Checks a response. Under FAULTS a 503 with `Retry-After` passes (and is counted and logged),
 * a 503 without it and any status `ok` refuses are counted. Returns true only when `ok` holds,
 * i.e. when the flow may go on.
 */
function answered(res, op, name, ok) {
  if (FAULTS && res.status === 503) {
    const retryAfter = Boolean(res.headers['Retry-After']);
    unavailable.add(1, { op });
    unavailableDuration.add(res.timings.duration, { op });
    if (!retryAfter) unavailableWithoutRetryAfter.add(1, { op });
    record({ w: '503', op, retryAfter, ms: Math.round(res.timings.duration) });
    check(res, { [`${op}: 503 with Retry-After`]: () => retryAfter });
    return false;
  }
  const passed = check(res, { [name]: ok });
  if (FAULTS && !passed) {
    unexpected.add(1, { op });
    record({ w: 'unexpected', op, status: res.status, ms: Math.round(res.timings.duration) });
  }
  return passed;
}

/** Entra's match query on the work email, encoded the way Entra sends it. */
function matchUrl(t, email) {
  const value = encodeURIComponent(email);
  return `${t.base}/Users?${t.flag}filter=emails%5Btype+eq+%22work%22%5D.value+eq+%22${value}%22`;
}

function listCount(res) {
  const found = /"totalResults":\s*(\d+)/.exec(res.body || '');
  return found ? Number(found[1]) : -1;
}

export function probe() {
  const t = pickTenant();
  const res = http.get(matchUrl(t, guid()), params(t.headers, 'probe'));
  answered(
    res,
    'probe',
    'probe: 200 empty ListResponse',
    (r) => r.status === 200 && listCount(r) === 0,
  );
}

/** Entra's create body for Roster's mapping (reference/entra-client.md §4.3). */
function createBody(email, nickname) {
  return JSON.stringify({
    schemas: [USER_SCHEMA, ENTERPRISE],
    externalId: nickname,
    userName: email,
    active: true,
    displayName: `Load ${nickname}`,
    title: 'Engineer',
    preferredLanguage: 'en-US',
    emails: [{ primary: true, type: 'work', value: email }],
    meta: { resourceType: 'User' },
    name: { formatted: `Load ${nickname}`, familyName: nickname, givenName: 'Load' },
    addresses: [
      {
        type: 'work',
        formatted: 'Building 1',
        streetAddress: '1 Main Street',
        locality: 'Springfield',
        region: 'IL',
        postalCode: '62701',
        country: 'US',
      },
    ],
    phoneNumbers: [
      { type: 'work', value: '+1 555 0100' },
      { type: 'mobile', value: '+1 555 0101' },
    ],
    roles: [],
    [ENTERPRISE]: { employeeNumber: nickname, department: 'Load' },
  });
}

export function provision(data) {
  const t = pickTenant();
  const nickname = `k6-${data.runId}-${exec.vu.idInTest}-${exec.vu.iterationInScenario}`;
  const email = `${nickname}@${t.tenant.slug}.load.example`;

  const match = http.get(matchUrl(t, email), params(t.headers, 'user_match'));
  const unmatched = answered(
    match,
    'user_match',
    'user_match: 200 no match',
    (r) => r.status === 200 && listCount(r) === 0,
  );
  if (!unmatched) return;

  const created = http.post(
    `${t.base}/Users`,
    createBody(email, nickname),
    params(t.headers, 'user_create'),
  );
  const ok = answered(
    created,
    'user_create',
    'user_create: 201 with id',
    (r) => r.status === 201 && /"id":\s*"[0-9a-f-]{36}"/.test(r.body),
  );
  if (FAULTS) {
    const id = ok ? /"id":\s*"([0-9a-f-]{36})"/.exec(created.body)[1] : null;
    record({ w: 'create', status: created.status, tenant: t.tenant.slug, userName: email, id });
  }
}

export function group() {
  const t = pickTenant();
  const target = t.tenant.groups[Math.floor(Math.random() * t.tenant.groups.length)];
  const filter = `externalId+eq+%22${target.externalId}%22`;
  const url = `${t.base}/Groups?${t.flag}excludedAttributes=members&filter=${filter}`;
  const match = http.get(url, params(t.headers, 'group_match'));
  const found = answered(
    match,
    'group_match',
    'group_match: 200 one group',
    (r) => r.status === 200 && listCount(r) === 1 && r.body.includes(`"id":"${target.id}"`),
  );
  if (!found) return;

  const members = sample(t.tenant.users, BATCH).map((u) => ({ $ref: null, value: u.id }));
  const body = JSON.stringify({
    schemas: [PATCH_OP],
    Operations: [{ op: 'Add', path: 'members', value: members }],
  });
  const patched = http.patch(`${t.base}/Groups/${target.id}`, body, params(t.headers, 'group_patch'));
  answered(patched, 'group_patch', 'group_patch: 204', (r) => r.status === 204);
  if (FAULTS) {
    const ids = members.map((m) => m.value);
    record({ w: 'members', status: patched.status, tenant: t.tenant.slug, group: target.id, ids });
  }
}

export function rematch() {
  const t = pickTenant();
  const user = t.tenant.users[Math.floor(Math.random() * t.tenant.users.length)];
  const res = http.get(matchUrl(t, user.email), params(t.headers, 'user_rematch'));
  answered(
    res,
    'user_rematch',
    'user_rematch: 200 the user',
    (r) => r.status === 200 && listCount(r) === 1 && r.body.includes(`"id":"${user.id}"`),
  );
}

/** VISIT=1: the tenant of this iteration (each tenant once) runs every flow. */
export function visit(data) {
  visiting = addressTenant(exec.scenario.iterationInTest);
  probe();
  provision(data);
  group();
  rematch();
  visiting = null;
}
