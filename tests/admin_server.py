"""A small HTTP server shaped like Caddy's admin API, for state delivery tests (standard library only).

Run as ``python tests/admin_server.py --port P [--host H] [--unix PATH] [--fail-first N] [--delay-start S]``.

- ``POST /load``: takes a JSON config and holds it (200); invalid JSON is answered 400 with
  ``{"error": "..."}`` as Caddy does; the first N requests to /load after the start are answered 503.
- ``GET /config/``: the config held, as JSON (``null`` before any load).
- ``GET /route/NAME``: 200 with the body of route NAME when the config is ``{"routes": {"NAME": "body"}}``,
  else 404: what a proxy with those routes would serve.
- ``GET /stats``: request counts and the last Content-Type and size of a /load, as JSON.

It prints ``listening PORT`` (or ``listening PATH`` with ``--unix``) once bound (``--port 0``: a free port),
after ``--delay-start`` seconds, and exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import socketserver
import sys
import threading
import time
from typing import Any


class State:
    """What the server holds and counts; one lock around all of it."""

    def __init__(self, fail_first: int) -> None:
        self.lock = threading.Lock()
        self.fail_left = fail_first
        self.config: Any = None
        self.counts: dict[str, int] = {"requests": 0, "load": 0, "load_503": 0, "load_400": 0, "load_200": 0}
        self.last_content_type: str | None = None
        self.last_load_bytes = 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Caddy
    state: State  # set on the subclass made in main()

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.command} {self.path} " + (format % args) + "\n")

    def answer(self, status: int, payload: Any = None, raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if raw is None else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        s = self.state
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        with s.lock:
            s.counts["requests"] += 1
            if self.path != "/load":
                status, payload = 404, {"error": f"unknown path {self.path}"}
            else:
                s.counts["load"] += 1
                s.last_content_type = self.headers.get("Content-Type")
                s.last_load_bytes = len(data)
                if s.fail_left > 0:
                    s.fail_left -= 1
                    status, payload = 503, {"error": "starting up, try again"}
                else:
                    try:
                        s.config = json.loads(data)
                        status, payload = 200, None
                    except ValueError as exc:
                        status, payload = 400, {"error": f"loading config: decoding request body: {exc}"}
                s.counts[f"load_{status}"] += 1
        if status == 200:
            self.answer(200, raw=b"")
        else:
            self.answer(status, payload)

    def do_GET(self) -> None:
        s = self.state
        with s.lock:
            s.counts["requests"] += 1
            config = s.config
            stats = {**s.counts, "last_content_type": s.last_content_type, "last_load_bytes": s.last_load_bytes}
        if self.path == "/config/":
            self.answer(200, config)
        elif self.path == "/stats":
            self.answer(200, stats)
        elif self.path.startswith("/route/"):
            routes = config.get("routes") if isinstance(config, dict) else None
            name = self.path.removeprefix("/route/")
            if isinstance(routes, dict) and isinstance(routes.get(name), str):
                self.answer(200, raw=routes[name].encode())
            else:
                self.answer(404, {"error": f"no route {name}"})
        else:
            self.answer(404, {"error": f"unknown path {self.path}"})


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self) -> tuple[Any, Any]:
        conn, _ = self.socket.accept()
        return conn, ("unix", 0)  # BaseHTTPRequestHandler wants a (host, port) address


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--unix", default="")
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--delay-start", type=float, default=0.0)
    args = parser.parse_args()

    handler = type("BoundHandler", (Handler,), {"state": State(args.fail_first)})
    servers: list[socketserver.BaseServer] = []

    def on_term(*_: object) -> None:
        if not servers:
            raise SystemExit(0)
        # shutdown() waits for serve_forever() to return, so it must run in another thread.
        threading.Thread(target=servers[0].shutdown).start()

    signal.signal(signal.SIGTERM, on_term)
    time.sleep(args.delay_start)  # the point of the option: a server that is slow to bind
    server: socketserver.BaseServer
    if args.unix:
        if os.path.exists(args.unix):
            os.unlink(args.unix)
        server = UnixServer(args.unix, handler)
        where = args.unix
    else:
        tcp = http.server.ThreadingHTTPServer((args.host, args.port), handler)
        tcp.daemon_threads = True
        server, where = tcp, str(tcp.server_address[1])
    servers.append(server)
    print(f"listening {where}", flush=True)
    server.serve_forever(poll_interval=0.05)
    server.server_close()
    if args.unix:
        os.unlink(args.unix)


if __name__ == "__main__":
    main()
