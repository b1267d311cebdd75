#!/usr/bin/env python3
"""A tiny round-robin HTTP/1.1 load balancer for the rolling-restart profile.

It models what a Service or an ingress in front of several `roster serve` replicas does, with
one deliberate rule: a request is retried on the next replica only when it never reached the
current one, i.e. the connection was refused or could not be opened. That is always safe (no
replica saw the request), and it is what happens to a replica between SIGTERM (it stops
accepting) and its restart. A request that reached a replica is never replayed: if the replica
drops it, the client gets a 502 and the run counts a failed request. So "no failed request"
means the replica really drained what it had accepted.

Clients get keep-alive; each upstream request uses a fresh connection with `Connection: close`,
so no idle upstream connection can be closed under a request by a draining replica.

Usage: lb.py --listen 127.0.0.1:18090 --backend 127.0.0.1:18081 --backend 127.0.0.1:18082
       [--stats FILE]   (counters written as JSON on SIGTERM/SIGINT)
"""

import argparse
import asyncio
import itertools
import json
import signal
import time

HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
# How long one request may wait for some replica to accept it.
RETRY_BUDGET_SECS = 15.0
# A replica that refused a connection is skipped for this long.
DOWN_SECS = 0.25


class Balancer:
    def __init__(self, backends):
        self.backends = backends
        self.turn = itertools.cycle(range(len(backends)))
        self.down_until = [0.0] * len(backends)
        self.stats = {
            "requests": 0,
            "forwarded": {f"{h}:{p}": 0 for h, p in backends},
            "connect_retries": 0,
            "failed_after_send": 0,
            "no_backend": 0,
        }

    def candidates(self):
        """Backends in round-robin order, the ones recently refusing last."""
        start = next(self.turn)
        order = [(start + i) % len(self.backends) for i in range(len(self.backends))]
        now = time.monotonic()
        return sorted(order, key=lambda i: self.down_until[i] > now)

    async def open_upstream(self):
        deadline = time.monotonic() + RETRY_BUDGET_SECS
        while time.monotonic() < deadline:
            for i in self.candidates():
                host, port = self.backends[i]
                try:
                    reader, writer = await asyncio.open_connection(host, port)
                    return i, reader, writer
                except OSError:
                    self.down_until[i] = time.monotonic() + DOWN_SECS
                    self.stats["connect_retries"] += 1
            await asyncio.sleep(0.05)
        return None

    async def forward(self, head, body):
        upstream = await self.open_upstream()
        if upstream is None:
            self.stats["no_backend"] += 1
            return error_response(503, b"no replica accepted the connection")
        i, reader, writer = upstream
        host, port = self.backends[i]
        self.stats["forwarded"][f"{host}:{port}"] += 1
        try:
            writer.write(head + body)
            await writer.drain()
            response = await reader.read(-1)
        except OSError:
            response = b""
        finally:
            writer.close()
        if not response:
            self.stats["failed_after_send"] += 1
            return error_response(502, b"the replica closed the connection without answering")
        return strip_connection_header(response)


def error_response(status, detail):
    reason = {502: b"Bad Gateway", 503: b"Service Unavailable"}[status]
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s"
        % (status, reason, len(detail), detail)
    )


def strip_connection_header(response):
    head, sep, rest = response.partition(b"\r\n\r\n")
    lines = [
        line for line in head.split(b"\r\n")
        if line.split(b":", 1)[0].strip().lower() != b"connection"
    ]
    return b"\r\n".join(lines) + sep + rest


async def read_request(reader):
    """One request from the client: (upstream head bytes, body, keep_alive) or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = head[:-4].split(b"\r\n")
    request_line, headers = lines[0], lines[1:]
    length, keep_alive, chunked = 0, True, False
    kept = []
    for line in headers:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value.strip())
        elif lname == b"connection" and value.strip().lower() == b"close":
            keep_alive = False
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        if lname not in HOP_BY_HOP:
            kept.append(line)
    if chunked:
        body = await read_chunked(reader)
        kept = [l for l in kept if l.split(b":", 1)[0].strip().lower() != b"content-length"]
        kept.append(b"content-length: %d" % len(body))
    else:
        body = await reader.readexactly(length) if length else b""
    kept.append(b"connection: close")
    upstream_head = b"\r\n".join([request_line, *kept]) + b"\r\n\r\n"
    return upstream_head, body, keep_alive


async def read_chunked(reader):
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return body
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def serve_client(balancer, reader, writer):
    try:
        while True:
            request = await read_request(reader)
            if request is None:
                break
            head, body, keep_alive = request
            balancer.stats["requests"] += 1
            writer.write(await balancer.forward(head, body))
            await writer.drain()
            if not keep_alive:
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def parse_address(raw):
    host, _, port = raw.rpartition(":")
    return host, int(port)


async def main():
    parser = argparse.ArgumentParser(description="round-robin HTTP/1.1 load balancer")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--backend", action="append", required=True)
    parser.add_argument("--stats")
    args = parser.parse_args()

    balancer = Balancer([parse_address(b) for b in args.backend])
    host, port = parse_address(args.listen)
    server = await asyncio.start_server(
        lambda r, w: serve_client(balancer, r, w), host, port, backlog=1024
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"lb: listening on {args.listen}", flush=True)
    async with server:
        await stop.wait()
    if args.stats:
        with open(args.stats, "w", encoding="utf-8") as f:
            json.dump(balancer.stats, f)


if __name__ == "__main__":
    asyncio.run(main())
