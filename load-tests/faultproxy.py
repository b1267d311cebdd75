#!/usr/bin/env python3
"""A TCP proxy that injects faults on command, for the `faults` load profile.

It sits between Roster and one of its dependencies (the FusionAuth double, or Postgres for the
pool-exhaustion phase) and forwards bytes both ways. A small HTTP control port switches the
mode while a load run goes on:

  pass   forward everything
  slow   hold each chunk the client sends for `delay_ms` before forwarding it, so every request
         reaches the dependency late (past Roster's timeout it is applied anyway: the answer is
         what gets lost, as with a real slow server)
  down   refuse new connections (the listening socket is closed) and reset the open ones
  flap   alternate down and up every `period_ms`; while up, an answer is replaced by a reset
         connection with probability `drop` (the dependency applied the request, Roster never
         hears back)

Usage: faultproxy.py --listen 127.0.0.1:28092 --upstream 127.0.0.1:28091 \
           --control 127.0.0.1:28093 [--events FILE]
       curl 'http://127.0.0.1:28093/mode?set=slow&delay_ms=1500'
       curl 'http://127.0.0.1:28093/mode?set=flap&period_ms=1000&drop=0.2'
       curl 'http://127.0.0.1:28093/mode?set=pass'

Every mode change is appended to `--events` as one JSON line with its time, and the control
port answers with the state and counters as JSON (`GET /state`).
"""

import argparse
import asyncio
import json
import random
import signal
import socket
import struct
import time
from urllib.parse import parse_qs, urlsplit

CHUNK = 65536


def host_port(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def reset(writer):
    """Closes a connection with a TCP reset, the way a crashed peer looks."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class Proxy:
    def __init__(self, listen, upstream, events):
        self.listen = listen
        self.upstream = upstream
        self.events = events
        self.mode = {"set": "pass"}
        self.server = None
        self.flapper = None
        self.open = set()
        self.counts = {"connections": 0, "refused_windows": 0, "dropped_answers": 0,
                       "reset_connections": 0}

    # --- listening ------------------------------------------------------------------------
    async def up(self):
        if self.server is None:
            self.server = await asyncio.start_server(self.handle, *self.listen, reuse_address=True)

    def down(self):
        if self.server is not None:
            # Not awaiting wait_closed(): it would wait for every open connection to end.
            self.server.close()
            self.server = None
            self.counts["refused_windows"] += 1
        for pair in list(self.open):
            for writer in pair:
                reset(writer)
            self.counts["reset_connections"] += 1
        self.open.clear()

    # --- forwarding -----------------------------------------------------------------------
    async def handle(self, client_reader, client_writer):
        self.counts["connections"] += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            reset(client_writer)
            return
        pair = (client_writer, up_writer)
        self.open.add(pair)
        try:
            await asyncio.gather(
                self.pump(client_reader, up_writer, pair, towards_upstream=True),
                self.pump(up_reader, client_writer, pair, towards_upstream=False),
            )
        finally:
            self.open.discard(pair)
            for writer in pair:
                writer.close()

    async def pump(self, reader, writer, pair, towards_upstream):
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                mode = self.mode
                if towards_upstream and mode["set"] == "slow":
                    await asyncio.sleep(float(mode.get("delay_ms", 0)) / 1000)
                if not towards_upstream and mode["set"] == "flap":
                    if random.random() < float(mode.get("drop", 0)):
                        self.counts["dropped_answers"] += 1
                        for w in pair:
                            reset(w)
                        return
                if writer.is_closing():
                    return
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
        except (ConnectionError, OSError):
            for w in pair:
                w.transport.abort()

    # --- modes ----------------------------------------------------------------------------
    async def set_mode(self, mode):
        if self.flapper is not None:
            self.flapper.cancel()
            self.flapper = None
        self.mode = mode
        self.event(mode)
        if mode["set"] == "down":
            self.down()
        elif mode["set"] == "flap":
            self.flapper = asyncio.create_task(self.flap(float(mode.get("period_ms", 1000))))
        else:
            await self.up()

    async def flap(self, period_ms):
        while True:
            self.down()
            await asyncio.sleep(period_ms / 1000)
            await self.up()
            await asyncio.sleep(period_ms / 1000)

    def event(self, mode):
        if self.events:
            with open(self.events, "a", encoding="utf-8") as f:
                f.write(json.dumps({"t": time.time(), "mode": mode}) + "\n")

    # --- control port ---------------------------------------------------------------------
    async def control(self, reader, writer):
        try:
            line = (await reader.readline()).decode("latin-1")
            while (await reader.readline()).strip():
                pass
            target = urlsplit(line.split(" ")[1] if " " in line else "/")
            query = {k: v[-1] for k, v in parse_qs(target.query).items()}
            status = "200 OK"
            if target.path == "/mode" and query.get("set") in ("pass", "slow", "down", "flap"):
                await self.set_mode(query)
            elif target.path != "/state":
                status = "400 Bad Request"
            body = json.dumps({"mode": self.mode, "counts": self.counts}).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
            )
            await writer.drain()
        finally:
            writer.close()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listen", required=True, type=host_port)
    parser.add_argument("--upstream", required=True, type=host_port)
    parser.add_argument("--control", required=True, type=host_port)
    parser.add_argument("--events")
    args = parser.parse_args()

    proxy = Proxy(args.listen, args.upstream, args.events)
    await proxy.up()
    control = await asyncio.start_server(proxy.control, *args.control, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    control.close()
    proxy.down()


if __name__ == "__main__":
    asyncio.run(main())
