#!/usr/bin/env python3
"""Combines a load run's pieces into one JSON summary and prints the headline numbers.

Inputs: k6 `--summary-export` files (one per labelled run), the samples written by sample.py,
the seed file's statistics, and optional extras (load-balancer counters, restart events).
Output: `--out` with, per k6 run, requests, achieved rate, error rate, dropped iterations and
per-operation latency (avg, p95, p99, max), plus server RSS (VmRSS/VmHWM maxima) and CPU used by
each process group during the run (in cores: 1.0 = one core busy the whole time).
"""

import argparse
import json
import os
import re
import sys

OP_METRIC = re.compile(r"^(http_req_duration|http_req_failed|http_reqs)\{op:([a-z_]+)\}$")
ROLES = ("server", "server_b", "double", "k6", "lb", "postgres", "redis")


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def ms(value):
    return None if value is None else round(value, 2)


def failed_thresholds(metric):
    # In k6's summary export a threshold maps to true when it was crossed (failed).
    return [name for name, crossed in (metric.get("thresholds") or {}).items() if crossed]


def k6_run(export, exit_code):
    metrics = export.get("metrics", {})
    per_op = {}
    for name, metric in metrics.items():
        found = OP_METRIC.match(name)
        if not found:
            continue
        kind, op = found.groups()
        entry = per_op.setdefault(op, {})
        if kind == "http_req_duration":
            entry.update(
                avg_ms=ms(metric.get("avg")),
                med_ms=ms(metric.get("med")),
                p95_ms=ms(metric.get("p(95)")),
                p99_ms=ms(metric.get("p(99)")),
                max_ms=ms(metric.get("max")),
            )
        elif kind == "http_req_failed":
            entry["error_rate"] = metric.get("value")
        else:
            entry["count"] = metric.get("count")
    duration = metrics.get("http_req_duration", {})
    reqs = metrics.get("http_reqs", {})
    failed = metrics.get("http_req_failed", {})
    crossed = {n: failed_thresholds(m) for n, m in metrics.items() if failed_thresholds(m)}
    return {
        "k6_exit": exit_code,
        "thresholds_ok": exit_code == 0 and not crossed,
        "thresholds_crossed": crossed,
        "requests": reqs.get("count"),
        "rate_per_s": round(reqs.get("rate", 0), 1),
        "error_rate": failed.get("value"),
        "failed_requests": failed.get("passes"),
        "checks_rate": metrics.get("checks", {}).get("value"),
        "dropped_iterations": metrics.get("dropped_iterations", {}).get("count", 0),
        "p95_ms": ms(duration.get("p(95)")),
        "p99_ms": ms(duration.get("p(99)")),
        "per_op": dict(sorted(per_op.items())),
    }


def read_samples(path):
    if not path or not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def cpu_cores(samples, key, tick_hz):
    """Average cores used by `key` over the samples, following restarts (pid changes)."""
    used, first, last, prev = 0, None, None, None
    for s in samples:
        value = s.get(key)
        if value is None:
            continue
        ticks, pid = (value, None) if isinstance(value, int) else (value["cpu_ticks"], value["pid"])
        if prev is not None and prev[1] == pid and ticks >= prev[0]:
            used += ticks - prev[0]
        prev = (ticks, pid)
        first = s["t"] if first is None else first
        last = s["t"]
    if first is None or last == first:
        return None
    return round(used / tick_hz / (last - first), 2)


def resources(samples):
    tick_hz = os.sysconf("SC_CLK_TCK")
    out = {}
    for role in ROLES:
        entry = {"cpu_cores": cpu_cores(samples, role, tick_hz)}
        # A process caught as it exits (a zombie) has no memory lines: its sample has no RSS.
        sized = [s[role] for s in samples if isinstance(s.get(role), dict) and "rss_kb" in s[role]]
        rss = [sample["rss_kb"] for sample in sized]
        hwm = [sample.get("hwm_kb", 0) for sample in sized]
        if rss:
            entry.update(rss_max_mb=round(max(rss) / 1024, 1), hwm_max_mb=round(max(hwm) / 1024, 1))
        if entry["cpu_cores"] is not None or rss:
            out[role] = entry
    machine = [s["machine"] for s in samples]
    if len(machine) > 1:
        busy = machine[-1]["busy"] - machine[0]["busy"]
        total = machine[-1]["total"] - machine[0]["total"]
        out["machine_busy"] = round(busy / total, 2) if total else None
        if total:
            # What the rest of the machine (other people's builds and tests) used meanwhile.
            cores = os.cpu_count() or 1
            ours = sum(v["cpu_cores"] or 0 for v in out.values() if isinstance(v, dict))
            out["other_cores"] = round(max(0.0, busy / total * cores - ours), 2)
    return out


def cpu_per_request(run, secs):
    """CPU milliseconds each process group spent per request: independent of how much CPU the
    rest of the machine left over, so it says what rate the box could reach on its own."""
    requests = run.get("requests") or 0
    if not requests:
        return {}
    per = {
        role: round(v["cpu_cores"] * secs * 1000 / requests, 3)
        for role, v in run["resources"].items()
        if isinstance(v, dict) and v.get("cpu_cores") is not None
    }
    per["total"] = round(sum(per.values()), 3)
    return per


def window(samples, start, end):
    return [s for s in samples if start <= s["t"] <= end]


def print_run(label, run):
    print(
        f"[{label}] {run['requests']} requests at {run['rate_per_s']}/s, "
        f"errors {run['failed_requests']} ({run['error_rate']}), dropped iterations "
        f"{run['dropped_iterations']}, p95 {run['p95_ms']} ms, p99 {run['p99_ms']} ms, "
        f"thresholds {'ok' if run['thresholds_ok'] else 'CROSSED'}"
    )
    for op, e in run["per_op"].items():
        print(
            f"    {op:<13} n={e.get('count')!s:<7} p95={e.get('p95_ms')!s:<8} "
            f"p99={e.get('p99_ms')!s:<8} max={e.get('max_ms')!s:<8} errors={e.get('error_rate')}"
        )
    res = run.get("resources", {})
    parts = [f"{r} {v.get('cpu_cores')} cores" for r, v in res.items() if isinstance(v, dict)]
    if "server" in res and "rss_max_mb" in res["server"]:
        parts.append(f"server RSS max {res['server']['rss_max_mb']} MB")
    if "machine_busy" in res:
        parts.append(f"machine busy {res['machine_busy']:.0%} "
                     f"(other processes {res.get('other_cores')} cores)")
    print("    " + ", ".join(parts))
    per = run.get("cpu_ms_per_request") or {}
    if per.get("total"):
        cores = os.cpu_count() or 1
        listed = ", ".join(f"{role} {ms}" for role, ms in per.items())
        ceiling = cores * 1000 / per["total"]
        print(f"    CPU ms per request: {listed} -> at most ~{ceiling:.0f} req/s on {cores} idle cores")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--params", default="{}", help="JSON object of the run's settings")
    parser.add_argument("--k6", action="append", default=[],
                        help="label=EXPORT_FILE,EXIT_CODE,START_EPOCH,END_EPOCH")
    parser.add_argument("--samples")
    parser.add_argument("--seed")
    parser.add_argument("--extra", action="append", default=[], help="name=JSON_FILE")
    parser.add_argument("--compare", help="label_a,label_b: p95 ratio b/a per operation")
    return parser.parse_args()


def main():
    args = parse_args()
    samples = read_samples(args.samples)
    summary = {"profile": args.profile, "params": json.loads(args.params), "runs": {}}
    if args.seed and os.path.exists(args.seed):
        summary["seed"] = load_json(args.seed).get("stats")
    for item in args.k6:
        label, spec = item.split("=", 1)
        path, code, start, end = spec.split(",")
        if not os.path.exists(path):
            summary["runs"][label] = {"k6_exit": int(code), "thresholds_ok": False,
                                      "error": "k6 wrote no summary"}
            continue
        run = k6_run(load_json(path), int(code))
        run["resources"] = resources(window(samples, float(start), float(end)))
        run["cpu_ms_per_request"] = cpu_per_request(run, float(end) - float(start))
        summary["runs"][label] = run
    for item in args.extra:
        name, path = item.split("=", 1)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                text = f.read()
            try:
                summary[name] = json.loads(text)
            except json.JSONDecodeError:
                summary[name] = [json.loads(l) for l in text.splitlines() if l.strip()]
    if args.compare:
        a, b = args.compare.split(",")
        ra, rb = summary["runs"].get(a, {}), summary["runs"].get(b, {})
        if ra.get("p95_ms") and rb.get("p95_ms"):
            ops = sorted(set(ra["per_op"]) & set(rb["per_op"]))
            summary["comparison"] = {
                "labels": [a, b],
                "p95_ratio": round(rb["p95_ms"] / ra["p95_ms"], 2),
                "per_op_p95_ratio": {
                    op: round(rb["per_op"][op]["p95_ms"] / ra["per_op"][op]["p95_ms"], 2)
                    for op in ops if ra["per_op"][op].get("p95_ms")
                },
            }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)

    for label, run in summary["runs"].items():
        if "error" in run:
            print(f"[{label}] {run['error']} (k6 exit {run['k6_exit']})")
        else:
            print_run(label, run)
    if "comparison" in summary:
        c = summary["comparison"]
        print(f"p95 {c['labels'][1]} / {c['labels'][0]} = {c['p95_ratio']} "
              f"(per operation: {c['per_op_p95_ratio']})")
    print(f"summary: {args.out}")
    ok = all(r.get("thresholds_ok") for r in summary["runs"].values())
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
