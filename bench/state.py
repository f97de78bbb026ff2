"""Stored state: what a Reload costs over a direct POST, and how soon a SIGKILLed child has its state again.

    .venv/bin/python bench/state.py                         # 200 reloads, 20 kills
    .venv/bin/python bench/state.py --reloads 500 --kills 20 --json bench/out/state.json

One supd (its store in a temporary directory) runs one child, ``tests/admin_server.py``
(an HTTP server shaped like Caddy's admin API) with an ``http`` state delivery to
``POST /load``, restart ALWAYS, restart backoff 0.05 s and no flap limit.

1. Reload latency: N Reloads of a ~2 KiB JSON, interleaved with the same POST
   sent straight to the child from this process with httpx (supd's own client
   library): with a new ``httpx.AsyncClient`` per request (what supd's delivery
   does), the same with one TLS context made once and reused, and over one
   kept-alive client; beside them the cost of ``httpx.AsyncHTTPTransport()``
   alone, a Health RPC (the gRPC round trip alone) and the store's two fsynced
   transactions of a Reload (begin + accept, a StateStore of this process in the
   same file system).
2. SIGKILL to state applied: K times, the child is SIGKILLed; a Stream follows
   its events (EXITED, STARTED, STATE_APPLIED); once the EXITED event is here,
   this process polls the port every 0.5 ms. Per kill: the time to supd's
   EXITED and STARTED stamps, to the port accepting a connection again, to
   supd's STATE_APPLIED stamp and to the event's arrival here; then applied
   minus accepting. Target: state applied ≤ 100 ms after the port accepts.
3. Health beside Reloads: Health latency (one call every 2 ms, for
   ``--health-seconds``) with supd idle, then while another thread sends
   Reloads back to back: what a delivery costs supd's other clients.

The exit status is 1 when something failed (a Reload refused, a restarted child
not holding the state); a missed target is printed as MISSED, not a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import pathlib
import signal
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import structlog

from supervisor._daemon.state.store import StateStore
from supervisor.testing import SupervisorProcess, accepting, free_port, running_supervisor, wait_until
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

ADMIN = str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "admin_server.py")
NAME = "admin"
TARGET_MS = 100.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))



def payload(serial: int, size: int) -> bytes:
    """A JSON config of exactly ``size`` bytes (routes, as Caddy's would be), different per ``serial``."""
    routes = {f"app{i:02d}": f"upstream-{i:02d}.internal:80{i:02d}" for i in range(40)}
    doc = {"serial": f"{serial:08d}", "routes": routes, "pad": ""}
    short = size - len(json.dumps(doc).encode())
    if short < 0:
        raise SystemExit(f"--state-bytes {size} is smaller than the base document")
    doc["pad"] = "x" * short
    data = json.dumps(doc).encode()
    assert len(data) == size
    return data


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (0..100), linear between the closest ranks."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values), "p50": pct(values, 50), "p95": pct(values, 95), "p99": pct(values, 99),
        "max": max(values), "mean": statistics.fmean(values),
    }



def info(stub: pb_grpc.SupervisorStub) -> pb.ChildInfo:
    return stub.Health(pb.HealthRequest(name=NAME), timeout=10).children[0]


def held(port: int) -> Any:
    with _OPENER.open(f"http://127.0.0.1:{port}/config/", timeout=5) as reply:
        return json.loads(reply.read())


class Events:
    """Follows the child's Stream in a thread; keeps (arrival perf_counter, event) for every event."""

    def __init__(self, stub: pb_grpc.SupervisorStub) -> None:
        self.items: list[tuple[float, pb.Event]] = []
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._call = stub.Stream(pb.StreamRequest(name=NAME, follow=True, tail=0))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for message in self._call:
                if message.HasField("event"):
                    arrived = time.perf_counter()
                    with self._cond:
                        self.items.append((arrived, message.event))
                        self._cond.notify_all()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.error = exc
        finally:
            with self._cond:
                self._cond.notify_all()

    def wait(self, match: Callable[[pb.Event], bool], start: int, timeout: float) -> tuple[float, pb.Event]:
        """The first event from index ``start`` on that ``match``es; AssertionError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for arrived, event in self.items[start:]:
                    if match(event):
                        return arrived, event
                left = deadline - time.monotonic()
                if left <= 0 or self.error is not None or not self._thread.is_alive():
                    raise AssertionError(f"no matching event within {timeout}s (stream error: {self.error})")
                self._cond.wait(left)

    def mark(self) -> int:
        with self._cond:
            return len(self.items)

    def cancel(self) -> None:
        self._call.cancel()
        self._thread.join(10)


# --- 1. Reload latency ------------------------------------------------------------------------------------


async def post_new_client(url: str, body: bytes, tls: ssl.SSLContext | None = None) -> float:
    """One POST as supd's delivery makes it to an http:// URL: a new AsyncClient without certificates, client.stream,
    close. Seconds.

    ``tls``: a TLS context made once and reused (what supd does for https:// URLs).
    """
    began = time.perf_counter()
    transport = httpx.AsyncHTTPTransport(verify=False) if tls is None else httpx.AsyncHTTPTransport(verify=tls)
    async with (
        httpx.AsyncClient(transport=transport, timeout=5) as client,
        client.stream("POST", url, content=body, headers={"Content-Type": "application/json"}) as r,
    ):
        if r.status_code != 200:
            raise RuntimeError(f"direct POST: HTTP {r.status_code}")
    return time.perf_counter() - began


async def post_kept_alive(client: httpx.AsyncClient, url: str, body: bytes) -> float:
    began = time.perf_counter()
    async with client.stream("POST", url, content=body, headers={"Content-Type": "application/json"}) as r:
        if r.status_code != 200:
            raise RuntimeError(f"direct POST (kept alive): HTTP {r.status_code}")
    return time.perf_counter() - began


def timed(call: Callable[[], object]) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def reload_latency(stub: pb_grpc.SupervisorStub, port: int, reloads: int, size: int, store_dir: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/load"
    loop = asyncio.new_event_loop()
    kept = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(), timeout=5)
    store = StateStore.open(store_dir)
    tls = ssl.create_default_context()
    samples: dict[str, list[float]] = {}
    warmup = 10
    last = b""
    try:
        for i in range(warmup + reloads):
            body = payload(i, size)
            got = {
                "direct_new_client": loop.run_until_complete(post_new_client(url, body)),
                "transport": timed(httpx.AsyncHTTPTransport),
                "direct_reused_tls": loop.run_until_complete(post_new_client(url, body, tls)),
                "direct_kept_alive": loop.run_until_complete(post_kept_alive(kept, url, body)),
                "health": timed(lambda: stub.Health(pb.HealthRequest(name=NAME), timeout=10)),
                "store": timed(lambda b=body: store.accept_revision(
                    NAME, store.begin_revision(NAME, b, "application/json", time.time_ns()), time.time_ns())),
                "reload": timed(lambda b=body: stub.Reload(
                    pb.ReloadRequest(name=NAME, state=b, content_type="application/json"), timeout=30)),
            }
            last = body
            if i >= warmup:
                for key, seconds in got.items():
                    samples.setdefault(key, []).append(seconds * 1000)
    finally:
        loop.run_until_complete(kept.aclose())
        loop.close()
        store.close()
    if held(port) != json.loads(last):
        raise SystemExit("FAILED: the child does not hold the last reloaded state")
    return {key: {**summary(values), "samples_ms": values} for key, values in samples.items()}


# --- 2. SIGKILL to state applied -----------------------------------------------------------------------------


def ns(ts: Any) -> int:
    return int(ts.seconds) * 1_000_000_000 + int(ts.nanos)


def event_of(kind: int, generation: int) -> Callable[[pb.Event], bool]:
    return lambda e: e.kind == kind and e.generation == generation


def kill_to_applied(stub: pb_grpc.SupervisorStub, port: int, kills: int, poll: float) -> list[dict[str, float]]:
    events = Events(stub)
    expected = held(port)
    rows = []
    try:
        for k in range(kills):
            before = wait_until(lambda: (c := info(stub)).ready and c.state_applied_revision == c.state_revision
                                and c, 20, what="the child ready with its state")
            mark = events.mark()
            kill_wall = time.time_ns()
            kill_at = time.perf_counter()
            os.kill(before.pid, signal.SIGKILL)
            # Not /proc: a killed multi-threaded server shows its leader as a zombie while its other threads
            # still hold the listening socket (and the kernel still completes connections to it). Once supd
            # has seen the exit, the whole process is gone.
            exited_at, exited = events.wait(event_of(pb.Event.KIND_EXITED, before.generation), mark, 20)
            while not accepting(port):
                time.sleep(poll)
            accept_at = time.perf_counter()
            _, started = events.wait(event_of(pb.Event.KIND_STARTED, before.generation + 1), mark, 20)
            applied_at, applied = events.wait(event_of(pb.Event.KIND_STATE_APPLIED, before.generation + 1), mark, 20)
            if held(port) != expected:
                raise SystemExit(f"FAILED: after kill {k + 1} the restarted child does not hold the state")
            row = {
                "exited_received_ms": (exited_at - kill_at) * 1000,
                "exited_stamp_ms": (ns(exited.time) - kill_wall) / 1e6,
                "started_stamp_ms": (ns(started.time) - kill_wall) / 1e6,
                "accepting_ms": (accept_at - kill_at) * 1000,
                "applied_stamp_ms": (ns(applied.time) - kill_wall) / 1e6,
                "applied_received_ms": (applied_at - kill_at) * 1000,
            }
            row["applied_after_accepting_ms"] = row["applied_received_ms"] - row["accepting_ms"]
            row["applied_stamp_after_accepting_ms"] = row["applied_stamp_ms"] - row["accepting_ms"]
            rows.append(row)
    finally:
        events.cancel()
    return rows


# --- 3. Health beside Reloads ---------------------------------------------------------------------------------


def health_beside_reloads(sup: SupervisorProcess, seconds: float, size: int) -> dict[str, Any]:
    """Health latency (one call every 2 ms) for ``seconds`` with supd idle, then with Reloads back to back."""

    def probe() -> list[float]:
        with sup.channel() as channel:
            stub = pb_grpc.SupervisorStub(channel)
            out, end = [], time.monotonic() + seconds
            while time.monotonic() < end:
                out.append(timed(lambda: stub.Health(pb.HealthRequest(name=NAME), timeout=10)) * 1000)
                time.sleep(0.002)
            return out

    idle = probe()
    stop, count = threading.Event(), [0]

    def reloader() -> None:
        with sup.channel() as channel:
            stub = pb_grpc.SupervisorStub(channel)
            while not stop.is_set():
                body = payload(count[0], size)
                stub.Reload(pb.ReloadRequest(name=NAME, state=body, content_type="application/json"), timeout=30)
                count[0] += 1

    thread = threading.Thread(target=reloader)
    thread.start()
    try:
        busy = probe()
    finally:
        stop.set()
        thread.join(60)
    return {"idle": {**summary(idle), "samples_ms": idle}, "reloading": {**summary(busy), "samples_ms": busy},
            "reloads": count[0], "seconds": seconds}


# --- printing ----------------------------------------------------------------------------------------------------


def print_report(result: dict[str, Any]) -> bool:
    """Print the tables; True when the target was met."""
    a = result["reload"]
    print(f"\n1. Reload latency, {result['reloads']} reloads of a {result['state_bytes']:,}-byte JSON (ms)")
    print(f"{'':48}{'p50':>8}{'p99':>8}{'max':>8}")
    labels = [
        ("direct_new_client", "direct POST, new httpx client (as supd)"),
        ("transport", "httpx.AsyncHTTPTransport() loading certificates"),
        ("direct_reused_tls", "direct POST, new client, TLS context reused"),
        ("direct_kept_alive", "direct POST, one kept-alive httpx client"),
        ("health", "Health RPC (gRPC round trip only)"),
        ("store", "store begin + accept (2 fsynced commits)"),
        ("reload", "Reload RPC"),
    ]
    for key, label in labels:
        s = a[key]
        print(f"{label:48}{s['p50']:8.2f}{s['p99']:8.2f}{s['max']:8.2f}")
    added50 = a["reload"]["p50"] - a["direct_new_client"]["p50"]
    added99 = a["reload"]["p99"] - a["direct_new_client"]["p99"]
    print(f"{'what supd adds (Reload - direct POST as supd)':48}{added50:8.2f}{added99:8.2f}")
    reused50 = a["reload"]["p50"] - a["direct_reused_tls"]["p50"]
    reused99 = a["reload"]["p99"] - a["direct_reused_tls"]["p99"]
    print(f"{'Reload - direct POST with a reused TLS context':48}{reused50:8.2f}{reused99:8.2f}")

    rows = result["kills"]
    print(f"\n2. SIGKILL of the child to its state applied again, {len(rows)} kills (ms after the kill)")
    print(f"{'':48}{'median':>8}{'p95':>8}{'max':>8}")
    for key, label in [
        ("exited_stamp_ms", "EXITED (supd's stamp)"),
        ("exited_received_ms", "EXITED received on the Stream"),
        ("started_stamp_ms", "STARTED (supd's stamp)"),
        ("accepting_ms", "port accepts a connection (polled here)"),
        ("applied_stamp_ms", "STATE_APPLIED (supd's stamp)"),
        ("applied_received_ms", "STATE_APPLIED received on the Stream"),
        ("applied_stamp_after_accepting_ms", "applied (stamp) - accepting"),
        ("applied_after_accepting_ms", "applied (received) - accepting"),
    ]:
        values = [r[key] for r in rows]
        print(f"{label:48}{statistics.median(values):8.1f}{pct(values, 95):8.1f}{max(values):8.1f}")
    worst = max(r["applied_after_accepting_ms"] for r in rows)
    within = sum(r["applied_after_accepting_ms"] <= TARGET_MS for r in rows)
    met = worst <= TARGET_MS
    verdict = "ok" if met else "MISSED"
    print(f"target: state applied <= {TARGET_MS:g} ms after the port accepts, every kill: {verdict}"
          f" ({within}/{len(rows)} kills within, worst {worst:.1f})")
    print("\nper kill: accepting, applied (received), difference (ms)")
    for i, r in enumerate(rows, 1):
        print(f"  {i:3d}  {r['accepting_ms']:7.1f}  {r['applied_received_ms']:7.1f}  "
              f"{r['applied_after_accepting_ms']:+7.1f}")
    h = result["health"]
    print(f"\n3. Health latency, one call every 2 ms for {h['seconds']:g} s each (ms)")
    print(f"{'':48}{'calls':>8}{'p50':>8}{'p99':>8}{'max':>8}")
    for key, label in [("idle", "supd idle"), ("reloading", f"Reloads back to back ({h['reloads']} done)")]:
        s = h[key]
        print(f"{label:48}{s['n']:8d}{s['p50']:8.2f}{s['p99']:8.2f}{s['max']:8.2f}")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reloads", type=int, default=200)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--state-bytes", type=int, default=2048)
    parser.add_argument("--health-seconds", type=float, default=3.0, help="length of each Health probe (part 3)")
    parser.add_argument("--poll-ms", type=float, default=0.5, help="port polling interval")
    parser.add_argument("--json", type=pathlib.Path, help="write every figure and sample here")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # the bench's store
    if args.reloads < 1 or args.kills < 1:
        parser.error("--reloads and --kills must be >= 1")
    print(f"state benchmark: {args.reloads} reloads, {args.kills} kills, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}, httpx {httpx.__version__}, grpcio {grpc.__version__}")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="supd-bench-state-") as tmp:
        tmp_path = pathlib.Path(tmp)
        with running_supervisor(tmp_path) as sup, sup.channel() as channel:
            stub = pb_grpc.SupervisorStub(channel)
            delivery = pb.StateDelivery(
                http=pb.HttpDelivery(url=f"http://127.0.0.1:{port}/load", timeout_seconds=5),
                retry=pb.DeliveryRetry(retries=5, backoff=pb.Backoff(initial_seconds=0.05, max_seconds=0.2)),
                ready_timeout_seconds=10,
            )
            spec = pb.ChildSpec(
                name=NAME, argv=[sys.executable, ADMIN, "--port", str(port)], restart=pb.RESTART_POLICY_ALWAYS,
                backoff=pb.Backoff(initial_seconds=0.05, max_seconds=0.05), flap_limit=pb.FlapLimit(max_restarts=0),
                stop_grace_seconds=5, state_delivery=delivery,
            )
            stub.Spawn(pb.SpawnRequest(spec=spec), timeout=10)
            wait_until(lambda: accepting(port), 20, what="the child's port")
            result: dict[str, Any] = {
                "cpus": os.cpu_count(), "reloads": args.reloads, "state_bytes": args.state_bytes,
                "reload": reload_latency(stub, port, args.reloads, args.state_bytes, str(tmp_path / "bench-store")),
            }
            result["health"] = health_beside_reloads(sup, args.health_seconds, args.state_bytes)
            result["kills"] = kill_to_applied(stub, port, args.kills, args.poll_ms / 1000)
            if sup.proc.poll() is not None:
                raise SystemExit(f"FAILED: supd exited with {sup.proc.returncode}")
    result["target_met"] = print_report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
