"""Children that are real servers, for probe tests: ``python tests/probe_servers.py KIND --port P [options]``.

Each prints ``listening PORT`` (flushed) once bound (``--port 0``: a free port) and exits 0 on SIGTERM.

- ``http``: ``GET /healthz`` answers 200 ``ok``. Controls, each answered 200 at once:
  ``POST /control/fail`` (from then on /healthz answers 500 ``failing: told to fail``),
  ``POST /control/hang`` (/healthz never answers; the server keeps running and other paths still answer),
  ``POST /control/ok`` (back to normal; requests left hanging are then answered 200).
  ``GET /control/last`` answers the headers of the last /healthz request as JSON (names in lower case).
  ``GET /redirect`` answers 302 to ``/nowhere``; ``GET /big`` answers 500 with 5000 bytes of ``x``.
  Options: ``--fail-first N`` (the first N /healthz answer 503 ``starting: N left``) and
  ``--ready-after S`` (/healthz answers 503 ``not ready`` until S seconds after the start).
- ``grpc``: a grpc.health.v1 server (grpcio-health-checking's ``HealthServicer``); the server as a whole
  (service ``""``) is SERVING, and so is each ``--service NAME``. SIGUSR1 toggles the ``""`` status between
  SERVING and NOT_SERVING and prints ``status SERVING`` or ``status NOT_SERVING`` once it is set.
- ``tcp``: accepts connections and closes them.

Signals are taken by ``sigwait`` in the main thread (blocked in every thread), so a toggle never races a
request and SIGTERM never interrupts a lock holder. Standard library only, and grpcio for ``grpc``.
"""

from __future__ import annotations

import argparse
import http.server
import json
import signal
import socket
import sys
import threading
import time
from typing import Any

SIGNALS = {signal.SIGTERM, signal.SIGUSR1}


class HttpState:
    """The /healthz mode and counters, behind one condition."""

    def __init__(self, fail_first: int, ready_after: float) -> None:
        self.changed = threading.Condition()
        self.mode = "ok"  # "ok", "fail" or "hang"
        self.fail_left = fail_first
        self.ready_at = time.monotonic() + ready_after
        self.last_headers: dict[str, str] = {}

    def healthz(self, headers: dict[str, str]) -> tuple[int, str]:
        """The answer to a /healthz request; blocks while the mode is "hang"."""
        with self.changed:
            self.last_headers = headers
            self.changed.wait_for(lambda: self.mode != "hang")
            if self.mode == "fail":
                return 500, "failing: told to fail"
            if self.fail_left > 0:
                self.fail_left -= 1
                return 503, f"starting: {self.fail_left} left"
            if time.monotonic() < self.ready_at:
                return 503, "not ready"
            return 200, "ok"

    def set_mode(self, mode: str) -> None:
        with self.changed:
            self.mode = mode
            self.changed.notify_all()


class HttpHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HttpState  # set on the subclass made in serve_http()

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.command} {self.path} " + (format % args) + "\n")

    def answer(self, status: int, body: str, **headers: str) -> None:
        data = body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # a probe cut at its timeout left before the answer
            sys.stderr.write(f"{self.command} {self.path}: the client left before the answer\n")

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self.answer(*self.state.healthz({k.lower(): v for k, v in self.headers.items()}))
        elif self.path == "/control/last":
            with self.state.changed:
                self.answer(200, json.dumps(self.state.last_headers))
        elif self.path == "/big":
            self.answer(500, "x" * 5000)
        elif self.path == "/redirect":
            self.answer(302, "moved", Location="/nowhere")
        else:
            self.answer(404, f"no such path {self.path}")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        mode = self.path.removeprefix("/control/")
        if self.path.startswith("/control/") and mode in ("ok", "fail", "hang"):
            self.state.set_mode(mode)
            self.answer(200, mode)
        else:
            self.answer(404, f"no such control {self.path}")


def serve_http(args: argparse.Namespace) -> None:
    handler = type("BoundHandler", (HttpHandler,), {"state": HttpState(args.fail_first, args.ready_after)})
    server = http.server.ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True  # a hanging /healthz must not hold the exit
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    announce(server.server_address[1])
    wait_for_term()
    server.shutdown()
    server.server_close()


def serve_grpc(args: argparse.Namespace) -> None:
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    servicer = health.HealthServicer()
    servicer.set("", serving)
    for name in args.service:
        servicer.set(name, serving)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    server.start()
    announce(port)
    overall = serving
    while signal.sigwait(SIGNALS) == signal.SIGUSR1:
        overall = not_serving if overall == serving else serving
        servicer.set("", overall)
        print(f"status {health_pb2.HealthCheckResponse.ServingStatus.Name(overall)}", flush=True)
    server.stop(grace=None).wait()


def serve_tcp(args: argparse.Namespace) -> None:
    listener = socket.create_server((args.host, args.port))

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # the listener was closed: the server is stopping
                return
            connection.close()

    threading.Thread(target=accept, daemon=True).start()
    announce(listener.getsockname()[1])
    wait_for_term()
    listener.close()


def announce(port: int) -> None:
    print(f"listening {port}", flush=True)


def wait_for_term() -> None:
    while signal.sigwait(SIGNALS) != signal.SIGTERM:
        continue  # SIGUSR1 means nothing to this kind of server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=["http", "grpc", "tcp"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--fail-first", type=int, default=0, help="http: the first N /healthz answer 503")
    parser.add_argument("--ready-after", type=float, default=0.0, help="http: /healthz answers 503 for S seconds")
    parser.add_argument("--service", action="append", default=[], help="grpc: a service name, SERVING")
    args = parser.parse_args()
    # Blocked before any thread starts, so every thread inherits the mask and only sigwait() takes them.
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    {"http": serve_http, "grpc": serve_grpc, "tcp": serve_tcp}[args.kind](args)


if __name__ == "__main__":
    main()
