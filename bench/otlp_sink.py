"""A local OTLP logs receiver for benchmarks, meant to run in its own process.

It serves OTLP/gRPC (``LogsService/Export``, ``TraceService/Export``) and,
unless ``--http-port -1``, OTLP/HTTP (``POST /v1/logs``, ``POST /v1/traces``)
on 127.0.0.1, ephemeral ports by default. For every logs request it:

* parses the ``ExportLogsServiceRequest`` with opentelemetry-proto's generated
  classes (upb, in C) and sums ``len(log_records)`` of the scopes named
  ``supd.child.output`` (child lines: ``records``); records of other scopes
  (supd's own events, sent through the OpenTelemetry SDK) are counted apart
  (``other_records``), as are spans;
* finds every ``supd.log.seq`` attribute in the raw request bytes (one regular
  expression over the bytes, no per-record Python) and keeps their encodings
  in a set, so a sequence number received twice within one epoch is counted in
  ``seq_duplicates`` and a child-output record without one in ``seq_missing``;
* notes the CLOCK_MONOTONIC time (``time.monotonic()``, comparable with
  flood's ``start_mono_s``/``end_mono_s``) of the first and last request that
  brought child records.

The control channel is stdin/stdout, one JSON object a line. At start it
prints ``{"ready": true, "grpc_port": P, "http_port": Q, "pid": N}``. Then it
answers, one line each, the commands ``stats`` (the counters of the current
epoch, plus the sink's own CPU seconds), ``reset`` (the counters of the epoch
that ends, then a new epoch starts from zero) and ``quit`` (or EOF).

``measure_capacity()`` (used by drain.py, or ``otlp_sink.py --self-test``) feeds
a sink requests encoded by supd's own ``BatchEncoder`` from one client thread,
one request at a time as supd sends them, and returns the records/s the sink
took.

Run alone: ``/work/venv/bin/python bench/otlp_sink.py --self-test``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.server
import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
from typing import Any

CHILD_SCOPE = "supd.child.output"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# KeyValue{key: "supd.log.seq", value: AnyValue{int_value: varint}} as supd's encoder writes it
# (protobuf's own serializer writes the same bytes): the varint's bytes are the group.
SEQ_RE = re.compile(rb"\x0a\x0csupd\.log\.seq\x12[\x01-\x0b]\x18([\x80-\xff]*[\x00-\x7f])")
MAX_MESSAGE = 64 << 20


class Counts:
    """What one epoch received. Every method may be called from any thread."""

    def __init__(self, check_seq: bool = True) -> None:
        self._lock = threading.Lock()
        self.check_seq = check_seq
        self._new_epoch(0)

    def _new_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.requests = 0
        self.bad_requests = 0
        self.records = 0
        self.other_records = 0
        self.spans = 0
        self.bytes = 0
        self.seq_seen = 0
        self.seq_duplicates = 0
        self.seq_missing = 0
        self.first_mono: float | None = None
        self.last_mono: float | None = None
        self._seqs: set[bytes] = set()

    def add_logs(self, body: bytes) -> None:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

        try:
            request = ExportLogsServiceRequest.FromString(body)
        except Exception:
            with self._lock:
                self.requests += 1
                self.bad_requests += 1
            raise
        child = other = 0
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                if sl.scope.name == CHILD_SCOPE:
                    child += len(sl.log_records)
                else:
                    other += len(sl.log_records)
        seqs = SEQ_RE.findall(body) if self.check_seq and child else None
        now = time.monotonic()
        with self._lock:
            self.requests += 1
            self.bytes += len(body)
            self.records += child
            self.other_records += other
            if child:
                if self.first_mono is None:
                    self.first_mono = now
                self.last_mono = now
            if seqs is not None:
                before = len(self._seqs)
                self._seqs.update(seqs)
                fresh = len(self._seqs) - before
                self.seq_seen += len(seqs)
                self.seq_duplicates += len(seqs) - fresh
                self.seq_missing += max(0, child - len(seqs))

    def add_spans(self, body: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        request = ExportTraceServiceRequest.FromString(body)
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self._lock:
            self.spans += n

    def snapshot(self, reset: bool = False) -> dict[str, Any]:
        with self._lock:
            out = {
                "epoch": self.epoch,
                "requests": self.requests,
                "bad_requests": self.bad_requests,
                "records": self.records,
                "other_records": self.other_records,
                "spans": self.spans,
                "bytes": self.bytes,
                "seq_checked": self.check_seq,
                "seq_seen": self.seq_seen,
                "seq_unique": len(self._seqs),
                "seq_duplicates": self.seq_duplicates,
                "seq_missing": self.seq_missing,
                "first_mono_s": self.first_mono,
                "last_mono_s": self.last_mono,
                "cpu_s": time.process_time(),
                "now_mono_s": time.monotonic(),
            }
            if reset:
                self._new_epoch(self.epoch + 1)
        return out


def start_grpc(counts: Counts, port: int, workers: int) -> tuple[Any, int]:
    import grpc

    def logs(body: bytes, context: Any) -> bytes:
        counts.add_logs(body)
        return b""  # an empty ExportLogsServiceResponse: full success

    def traces(body: bytes, context: Any) -> bytes:
        counts.add_spans(body)
        return b""

    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.logs.v1.LogsService",
        {"Export": grpc.unary_unary_rpc_method_handler(logs)},
    )
    trace_handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(traces)},
    )
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=workers),
        handlers=[handler, trace_handler],
        options=[("grpc.max_receive_message_length", MAX_MESSAGE)],
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if not bound:
        raise SystemExit(f"otlp_sink: cannot listen on 127.0.0.1:{port}")
    server.start()
    return server, bound


def start_http(counts: Counts, port: int) -> tuple[http.server.ThreadingHTTPServer, int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                if self.path == "/v1/logs":
                    counts.add_logs(body)
                elif self.path == "/v1/traces":
                    counts.add_spans(body)
                else:
                    self._answer(404, b"no such path", "text/plain")
                    return
            except Exception as exc:
                self._answer(400, f"bad request: {exc!r}".encode(), "text/plain")
                return
            self._answer(200, b"", "application/x-protobuf")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    return server, server.server_address[1]


def serve(args: argparse.Namespace) -> int:
    counts = Counts(check_seq=not args.no_seq_check)
    grpc_server, grpc_port = start_grpc(counts, args.grpc_port, args.workers)
    http_port = None
    if args.http_port >= 0:
        _, http_port = start_http(counts, args.http_port)
    out = sys.stdout
    out.write(json.dumps({"ready": True, "grpc_port": grpc_port, "http_port": http_port, "pid": os.getpid()}) + "\n")
    out.flush()
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "stats":
            reply: dict[str, Any] = counts.snapshot()
        elif cmd == "reset":
            reply = counts.snapshot(reset=True)
        elif cmd == "quit":
            break
        else:
            reply = {"error": f"unknown command {cmd!r}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    grpc_server.stop(grace=None)
    return 0


# --------------------------------------------------------------------------- the runner's side


class Sink:
    """A sink in a child process, driven over its stdin/stdout (``with Sink() as sink``)."""

    def __init__(self, *, http: bool = True, check_seq: bool = True, python: str = sys.executable) -> None:
        cmd = [python, str(pathlib.Path(__file__).resolve()), "--http-port", "0" if http else "-1"]
        if not check_seq:
            cmd.append("--no-seq-check")
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        hello = self._read()
        if not hello.get("ready"):
            raise RuntimeError(f"otlp_sink did not start: {hello}")
        self.grpc_port: int = hello["grpc_port"]
        self.http_port: int | None = hello["http_port"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"otlp_sink exited (status {self.proc.poll()})")
        return json.loads(line)  # type: ignore[no-any-return]

    def _command(self, cmd: str) -> dict[str, Any]:
        with self._lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
            return self._read()

    def stats(self) -> dict[str, Any]:
        return self._command("stats")

    def reset(self) -> dict[str, Any]:
        """The epoch that ends; counting starts again from zero."""
        return self._command("reset")

    def endpoint(self, protocol: str) -> str:
        """The base endpoint for OTEL_EXPORTER_OTLP_ENDPOINT (http/protobuf appends /v1/logs itself)."""
        port = self.grpc_port if protocol == "grpc" else self.http_port
        if port is None:
            raise RuntimeError("this sink serves no OTLP/HTTP")
        return f"http://127.0.0.1:{port}"

    def env(self, protocol: str) -> dict[str, str]:
        """OTEL_* variables that point an exporter (supd) at this sink."""
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint(protocol),
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        }
        if protocol == "grpc":
            env["OTEL_EXPORTER_OTLP_INSECURE"] = "true"
        return env

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encoded_batches(records: int, batch: int = 4096, repo: pathlib.Path | None = None) -> list[bytes]:
    """ExportLogsServiceRequests as supd would send them for flood's lines, distinct sequence numbers."""
    repo = repo or pathlib.Path(__file__).resolve().parent.parent
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    from supervisor._daemon.output.sinks import STDOUT, Origin, Segment
    from supervisor._daemon.telemetry.otlp.encode import BatchEncoder

    enc = BatchEncoder({"service.name": "otlp-sink-self-test"}, CHILD_SCOPE, "0")
    origin = Origin("self-test", 1, os.getpid(), "/bench/bin/flood")
    filler = bytes(97 + k % 26 for k in range(11, 99))
    bodies = []
    for first in range(0, records, batch):
        n = min(batch, records - first)
        data = b"".join(b"%010d %s\n" % (i, filler) for i in range(first, first + n))
        seg = Segment(first_seq=first, count=n, stream=STDOUT, generation=1, time_ns=time.time_ns(), data=data)
        lines = data.split(b"\n")[:-1]
        enc.add(origin, seg, lines, 0, max_records=n, max_size=64 << 20)
        bodies.append(enc.take())
    return bodies


def measure_capacity(sink: Sink, protocol: str, bodies: list[bytes], records: int) -> dict[str, Any]:
    """Send ``bodies`` one after the other (one client thread, as supd does); records/s the sink took."""
    import grpc

    sink.reset()
    if protocol == "grpc":
        channel = grpc.insecure_channel(
            f"127.0.0.1:{sink.grpc_port}", options=[("grpc.max_send_message_length", MAX_MESSAGE)]
        )
        call = channel.unary_unary(LOGS_METHOD, request_serializer=None, response_deserializer=None)
        call(b"", timeout=10)  # connect first: an empty request has no records
        t0 = time.perf_counter()
        for body in bodies:
            call(body, timeout=30)
        elapsed = time.perf_counter() - t0
        channel.close()
    else:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", sink.http_port, timeout=30)
        headers = {"Content-Type": "application/x-protobuf"}
        conn.request("POST", "/v1/logs", b"", headers)
        conn.getresponse().read()
        t0 = time.perf_counter()
        for body in bodies:
            conn.request("POST", "/v1/logs", body, headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"otlp_sink answered HTTP {resp.status}")
        elapsed = time.perf_counter() - t0
        conn.close()
    got = sink.reset()
    ok = got["records"] == records and got["seq_duplicates"] == 0 and got["seq_missing"] == 0
    return {
        "protocol": protocol,
        "records": got["records"],
        "expected": records,
        "ok": ok,
        "elapsed_s": elapsed,
        "records_per_s": records / elapsed if elapsed > 0 else float("nan"),
        "requests": len(bodies),
        "seq_duplicates": got["seq_duplicates"],
        "seq_missing": got["seq_missing"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grpc-port", type=int, default=0)
    ap.add_argument("--http-port", type=int, default=0, help="-1: no OTLP/HTTP")
    ap.add_argument("--workers", type=int, default=4, help="gRPC server threads")
    ap.add_argument("--no-seq-check", action="store_true", help="do not check supd.log.seq for duplicates")
    ap.add_argument(
        "--self-test",
        action="store_true",
        help="start a sink in a child process and measure the records/s it takes from one client",
    )
    ap.add_argument("--records", type=int, default=163_840, help="records per self-test round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    if not args.self_test:
        return serve(args)
    bodies = encoded_batches(args.records)
    status = 0
    with Sink() as sink:
        for protocol in ("grpc", "http/protobuf"):
            for _ in range(args.rounds):
                r = measure_capacity(sink, protocol, bodies, args.records)
                status |= not r["ok"]
                print(
                    f"{protocol:14} {r['records']:>9,} records in {r['elapsed_s']:.3f} s: "
                    f"{r['records_per_s']:>11,.0f} records/s{'' if r['ok'] else '  WRONG COUNT'}",
                    flush=True,
                )
    return status


if __name__ == "__main__":
    sys.exit(main())
