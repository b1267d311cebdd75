// Helpers shared by the k6 scripts: reading settings from the environment and turning a
// request rate into an open-workload (arrival-rate) scenario.

/** A number from the environment, or `fallback`. */
export function envNumber(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') {
    return fallback;
  }
  const value = Number(raw);
  if (!Number.isFinite(value)) {
    throw new Error(`${name} must be a number, got "${raw}"`);
  }
  return value;
}

/** A string from the environment, or `fallback`. */
export function envString(name, fallback) {
  const raw = __ENV[name];
  return raw === undefined || raw === '' ? fallback : raw;
}

/** Seconds in a k6 duration such as "90s", "2m" or "1m30s". */
export function seconds(duration) {
  let total = 0;
  const parts = String(duration).match(/\d+(\.\d+)?(ms|s|m|h)/g) || [];
  for (const part of parts) {
    const value = parseFloat(part);
    if (part.endsWith('ms')) total += value / 1000;
    else if (part.endsWith('h')) total += value * 3600;
    else if (part.endsWith('m')) total += value * 60;
    else total += value;
  }
  return total;
}

/**
 * An arrival-rate scenario running `exec` `perSecond` times a second: constant, or ramping
 * from zero over `ramp` first. Rates are expressed per ten seconds so that fractional rates
 * survive k6's integer `rate`. VUs are allocated up front for ~50 ms per iteration (k6 drops an
 * iteration that finds no free VU while it starts another) and may grow to what `vuSeconds`
 * (default 0.2 s) per iteration would need (capped by `maxVus`); when even that is not enough
 * k6 drops iterations and reports them as `dropped_iterations`, which the thresholds watch: an
 * open workload must not quietly slow down to what the server manages.
 */
export function arrivalScenario(exec, perSecond, { duration, ramp, maxVus, vuSeconds = 0.2 }) {
  const per10s = Math.max(1, Math.round(perSecond * 10));
  const preAllocatedVUs = Math.max(5, Math.ceil(perSecond * 0.05) + 2);
  const grown = Math.ceil(perSecond * vuSeconds) + 20;
  const maxVUs = Math.max(preAllocatedVUs, Math.min(maxVus, grown));
  const common = { exec, timeUnit: '10s', preAllocatedVUs, maxVUs, gracefulStop: '10s' };
  if (seconds(ramp) > 0) {
    return {
      ...common,
      executor: 'ramping-arrival-rate',
      startRate: 0,
      stages: [
        { target: per10s, duration: ramp },
        { target: per10s, duration },
      ],
    };
  }
  return { ...common, executor: 'constant-arrival-rate', rate: per10s, duration };
}

/**
 * Per-operation thresholds for requests tagged `op:<op>`: p95 and p99 latency (ms) and no
 * failed request. The `count>=0` on `http_reqs` fails nothing; it makes k6 keep (and export)
 * the per-operation request count.
 */
export function opThresholds(ops, p95, p99) {
  const thresholds = {};
  for (const op of ops) {
    thresholds[`http_req_duration{op:${op}}`] = [`p(95)<${p95}`, `p(99)<${p99}`];
    thresholds[`http_req_failed{op:${op}}`] = ['rate==0'];
    thresholds[`http_reqs{op:${op}}`] = ['count>=0'];
  }
  return thresholds;
}

/** A random version-4 GUID in lowercase, as Entra puts in its probes and object ids. */
export function guid() {
  const hex = '0123456789abcdef';
  let out = '';
  for (let i = 0; i < 36; i += 1) {
    if (i === 8 || i === 13 || i === 18 || i === 23) out += '-';
    else if (i === 14) out += '4';
    else if (i === 19) out += hex[8 + Math.floor(Math.random() * 4)];
    else out += hex[Math.floor(Math.random() * 16)];
  }
  return out;
}

/** `count` distinct random elements of `items` (all of them when there are fewer). */
export function sample(items, count) {
  const pool = items.slice();
  const picked = [];
  while (picked.length < count && pool.length > 0) {
    const i = Math.floor(Math.random() * pool.length);
    picked.push(pool[i]);
    pool[i] = pool[pool.length - 1];
    pool.pop();
  }
  return picked;
}
