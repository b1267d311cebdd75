#!/usr/bin/env python3
"""Samples memory and CPU of the processes under load, once a second, until SIGTERM.

For every `--pid role=PIDFILE` (the pid is re-read each time, so a restarted replica is
followed) it records VmRSS and VmHWM from /proc/<pid>/status and user+system CPU ticks from
/proc/<pid>/stat; for Postgres and Redis, the CPU ticks of every process with that name; and the
machine's busy and total ticks from /proc/stat. One JSON object per line in `--out`.
"""

import argparse
import json
import os
import signal
import time

BY_NAME = {"postgres": "postgres", "redis": "redis-server"}


def read_pid(pidfile):
    try:
        with open(pidfile, encoding="utf-8") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def process_sample(pid):
    sample = {"pid": pid}
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key = "rss_kb" if line.startswith("VmRSS") else "hwm_kb"
                    sample[key] = int(line.split()[1])
        sample["cpu_ticks"] = cpu_ticks(pid)
    except (OSError, ValueError, IndexError):
        return None
    return sample


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; fields[0] here is field 3.
    return int(fields[11]) + int(fields[12])


def ticks_by_name():
    totals = {role: 0 for role in BY_NAME}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.find("(") + 1 : raw.rfind(")")]
        for role, comm in BY_NAME.items():
            if name == comm:
                fields = raw.rsplit(")", 1)[1].split()
                totals[role] += int(fields[11]) + int(fields[12])
    return totals


def machine_ticks():
    with open("/proc/stat", encoding="utf-8") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return {"busy": sum(values) - idle, "total": sum(values)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--pid", action="append", default=[], help="role=PIDFILE")
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    roles = dict(item.split("=", 1) for item in args.pid)

    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with open(args.out, "a", encoding="utf-8") as out:
        while running:
            line = {"t": round(time.time(), 3), "machine": machine_ticks()}
            line.update(ticks_by_name())
            for role, pidfile in roles.items():
                pid = read_pid(pidfile)
                sample = process_sample(pid) if pid else None
                if sample:
                    line[role] = sample
            out.write(json.dumps(line) + "\n")
            out.flush()
            time.sleep(args.interval)


if __name__ == "__main__":
    main()
