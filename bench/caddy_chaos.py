"""Chaos against the real Caddy under supd, run from ``examples/caddy/`` (ports and paths replaced).

    .venv/bin/python bench/caddy_chaos.py --seconds 60            # what CI runs
    .venv/bin/python bench/caddy_chaos.py --seconds 300 --seed 7 --json bench/out/chaos.json

For ``--seconds``, one random step after another, each left to settle before the next:

- ``reload``: a Reload of a valid route set (``/hello`` answers a new body); accepted, it is the new last
  accepted revision.
- ``reload-invalid``: a Reload of an invalid set (bad JSON, or JSON that Caddy refuses: an unknown handler);
  it must be refused with FAILED_PRECONDITION and change nothing.
- ``kill-caddy``: SIGKILL of Caddy; ``kill-caddy-reload``: the same, then at once a Reload of a valid set while
  Caddy comes back: accepted (at once or after retries of connection errors), refused while Caddy waits for its
  restart (FAILED_PRECONDITION), or UNAVAILABLE after its retries; whatever supd answered is what must hold.
- ``stop-caddy``: SIGSTOP of Caddy: its liveness probe fails and supd restarts it through the stop escalation.
- ``kill-supd``: SIGKILL of supd, then a new supd on the same store and config.

After every step settles (under a deadline): Caddy serves the body of the last accepted revision, Health shows
that revision accepted and applied and the child ready, Caddy's ``GET /config/`` is that revision, GetState
holds exactly its bytes (no accepted revision lost), and the process table holds exactly one Caddy of this run,
the pid supd reports (none orphaned, none duplicated). A thread GETs ``/hello`` every 10 ms all along.

Printed: the kills survived, by kind; the longest time ``/hello`` did not answer 200; p50/p99/max of the time
from a kill (or SIGSTOP) to the last accepted routes served again by a new Caddy. The exit status is 1 on any
violation (each is printed), 0 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

import grpc

from supervisor.testing import SupervisorProcess, free_port, running_supervisor, wait_until
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from caddy_peer import Example, fetch  # the tests' copy of examples/caddy/

STEPS = {"reload": 30, "reload-invalid": 15, "kill-caddy": 20, "kill-caddy-reload": 10, "stop-caddy": 8,
         "kill-supd": 12}
KILLS = ("kill-caddy", "kill-caddy-reload", "stop-caddy", "kill-supd")
SETTLE_SECONDS = 30.0


class Violation(Exception):
    """A promise broken: printed, counted, and the run exits 1."""


@dataclasses.dataclass
class Accepted:
    revision: int = 0
    state: bytes = b""
    body: bytes = b""


class Outages:
    """GETs /hello every 10 ms from a thread; keeps the longest stretch without a 200."""

    def __init__(self, port: int) -> None:
        self.port, self.longest, self._since = port, 0.0, None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.is_set():
            now = time.monotonic()
            if fetch(self.port, "/hello", timeout=1)[0] == 200:
                if self._since is not None:
                    self.longest = max(self.longest, now - self._since)
                self._since = None
            elif self._since is None:
                self._since = now
            self._done.wait(0.01)

    def __enter__(self) -> Outages:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


class Chaos:
    def __init__(self, work: pathlib.Path, seed: int) -> None:
        self.work = work
        self.rng = random.Random(seed)
        self.example = Example(work / "example", free_port(), free_port())
        self.accepted = Accepted()
        self.serial = 0
        self.counts: dict[str, int] = dict.fromkeys(STEPS, 0)
        self.recovery: dict[str, list[float]] = {k: [] for k in KILLS}
        self.violations: list[str] = []
        self.during_restart: dict[str, int] = {}  # outcomes of the Reloads of kill-caddy-reload
        self.sup: SupervisorProcess | None = None
        self.stub: pb_grpc.SupervisorStub | None = None

    # -- supd ---------------------------------------------------------------------------------------------------

    def start_supd(self) -> None:
        self._cm = running_supervisor(self.work, ["--config", str(self.example.config)])
        self.sup = self._cm.__enter__()
        self.stub = self.sup.stub()

    def stop_supd(self) -> None:
        if self.sup is not None:
            self._cm.__exit__(None, None, None)
            self.sup = self.stub = None

    def info(self) -> pb.ChildInfo:
        assert self.stub is not None
        return self.stub.Health(pb.HealthRequest(name="caddy"), timeout=5).children[0]

    # -- steps --------------------------------------------------------------------------------------------------

    def valid(self) -> tuple[bytes, bytes]:
        self.serial += 1
        body = f"routes {self.serial}\n"
        return self.example.routes(hello=body), body.encode()

    def invalid(self) -> bytes:
        if self.rng.random() < 0.5:
            return b'{"apps": {bad'
        config = json.loads(self.example.routes())
        config["apps"]["http"]["servers"]["example"]["routes"][1]["handle"][0]["handler"] = "no_such_handler"
        return json.dumps(config).encode()

    def reload(self, state: bytes, body: bytes, *, during_restart: bool = False) -> None:
        """A valid Reload: accepted, it is the last accepted revision. During a restart it may also be refused
        (no running process: FAILED_PRECONDITION) or find no Caddy through its retries (UNAVAILABLE)."""
        assert self.stub is not None
        try:
            reply = self.stub.Reload(pb.ReloadRequest(name="caddy", state=state), timeout=60)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            refused = code == grpc.StatusCode.FAILED_PRECONDITION and "no running process" in details
            if during_restart and (refused or code == grpc.StatusCode.UNAVAILABLE):
                self.during_restart[code.name] = self.during_restart.get(code.name, 0) + 1
                return
            raise Violation(f"a valid Reload failed: {code.name}: {details}") from exc
        if reply.revision <= self.accepted.revision:
            raise Violation(f"Reload answered revision {reply.revision} after {self.accepted.revision}")
        if during_restart:
            key = "accepted after retries" if reply.attempts > 1 else "accepted at once"
            self.during_restart[key] = self.during_restart.get(key, 0) + 1
        self.accepted = Accepted(reply.revision, state, body)

    def reload_invalid(self) -> None:
        assert self.stub is not None
        try:
            self.stub.Reload(pb.ReloadRequest(name="caddy", state=self.invalid()), timeout=60)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION or "HTTP 400" not in (exc.details() or ""):
                raise Violation(f"an invalid Reload got {exc.code().name}: {exc.details()}") from exc
            return
        raise Violation("an invalid route set was accepted")

    def step(self, kind: str) -> None:
        self.counts[kind] += 1
        if kind == "reload":
            self.reload(*self.valid())
            return self.settle()
        if kind == "reload-invalid":
            self.reload_invalid()
            return self.settle()
        old = self.info()
        if kind == "kill-supd":
            assert self.sup is not None
            at = time.monotonic()
            self.sup.proc.kill()
            self.sup.proc.wait(10)
            self.stop_supd()
            self.start_supd()
        else:
            at = time.monotonic()
            os.kill(old.pid, signal.SIGSTOP if kind == "stop-caddy" else signal.SIGKILL)
            if kind == "kill-caddy-reload":
                self.reload(*self.valid(), during_restart=True)
        try:
            self.settle(old_pid=old.pid)
        finally:
            if kind == "stop-caddy" and _running(old.pid):
                # Only if supd failed to end it (the violation is already raised); it may end meanwhile.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(old.pid, signal.SIGCONT)
        self.recovery[kind].append(self.recovered_at - at)

    # -- the checks ---------------------------------------------------------------------------------------------

    def settle(self, old_pid: int = 0) -> None:
        """Wait until every promise holds; Violation naming the first that never did."""
        want = self.accepted
        self.recovered_at = 0.0

        def served() -> bool:
            if old_pid and _running(old_pid):
                return False  # the old Caddy still runs: what answers may be it
            if fetch(self.example.http, "/hello", timeout=1) != (200, want.body):
                return False
            self.recovered_at = self.recovered_at or time.monotonic()
            return True

        try:
            wait_until(served, SETTLE_SECONDS, interval=0.005, what="the last accepted routes served")
            child = wait_until(lambda: (c := self.info()).ready and c, SETTLE_SECONDS, what="caddy ready")
        except AssertionError as exc:
            got = fetch(self.example.http, "/hello")
            raise Violation(f"{exc}: /hello answers {got}, revision {want.revision} wants {want.body!r}") from exc
        if (child.state_revision, child.state_applied_revision) != (want.revision, want.revision):
            raise Violation(f"Health: revision {child.state_revision} applied {child.state_applied_revision}, "
                            f"last accepted {want.revision}")
        assert self.stub is not None
        got = self.stub.GetState(pb.GetStateRequest(name="caddy"), timeout=5)
        if (got.revision.revision, got.revision.state) != (want.revision, want.state):
            raise Violation(f"GetState holds revision {got.revision.revision}, last accepted {want.revision}")
        if old_pid and child.pid == old_pid:
            raise Violation(f"caddy {old_pid} was not restarted")
        status, held = fetch(self.example.admin, "/config/")
        if status != 200 or json.loads(held) != json.loads(want.state):
            raise Violation(f"Caddy holds another config than revision {want.revision}: HTTP {status}: {held[:200]!r}")
        pids = self.example.pids()
        if pids != [child.pid]:
            raise Violation(f"Caddy processes {pids}, supd runs {child.pid}: orphaned or duplicated")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (k - lo)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="caddy-chaos-") as tmp:
        chaos = Chaos(pathlib.Path(tmp), args.seed)
        try:
            chaos.start_supd()
            wait_until(lambda: fetch(chaos.example.admin, "/config/")[0] == 200, SETTLE_SECONDS, what="caddy")
            chaos.reload(*chaos.valid())
            chaos.settle()
            with Outages(chaos.example.http) as outages:
                deadline = time.monotonic() + args.seconds
                kinds, weights = list(STEPS), list(STEPS.values())
                while time.monotonic() < deadline:
                    kind = chaos.rng.choices(kinds, weights)[0]
                    try:
                        chaos.step(kind)
                    except Violation as exc:
                        chaos.violations.append(f"{kind}: {exc}")
                        print(f"VIOLATION after {kind}: {exc}", flush=True)
                        break  # what follows a broken promise proves nothing
            chaos.stop_supd()
            left = chaos.example.pids()
            if left:
                chaos.violations.append(f"Caddy left running after supd's shutdown: {left}")
        finally:
            chaos.stop_supd()
            chaos.example.kill_all()
    times = [t for kind in KILLS for t in chaos.recovery[kind]]
    return {
        "seconds": args.seconds, "seed": args.seed, "steps": chaos.counts,
        "kills_survived": {k: len(v) for k, v in chaos.recovery.items()},
        "last_accepted_revision": chaos.accepted.revision,
        "reloads_during_restart": chaos.during_restart,
        "longest_unavailable_s": outages.longest,
        "kill_to_served_s": {"p50": pct(times, 50), "p99": pct(times, 99), "max": max(times)} if times else {},
        "kill_to_served_s_by_kind": {k: statistics.median(v) for k, v in chaos.recovery.items() if v},
        "violations": chaos.violations,
    }


def _running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited: its cmdline is empty once it is a zombie, and it may end
    (and /proc/PID go) between any two looks, so a missing file is an answer, not an error."""
    try:
        return bool(pathlib.Path(f"/proc/{pid}/cmdline").read_bytes())
    except (FileNotFoundError, ProcessLookupError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to keep stepping (default 60)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock, printed)")
    parser.add_argument("--json", type=pathlib.Path, help="also write every figure to this file")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = int(time.time())
    print(f"caddy chaos: {args.seconds:g} s, seed {args.seed}", flush=True)
    result = run(args)
    survived = result["kills_survived"]
    print(f"steps: {', '.join(f'{k} {n}' for k, n in result['steps'].items())}")
    print(f"kills survived: {sum(survived.values())} ({', '.join(f'{k} {n}' for k, n in survived.items())}); "
          f"last accepted revision {result['last_accepted_revision']}")
    if result["reloads_during_restart"]:
        print("Reloads sent right after a SIGKILL of Caddy: " + ", ".join(
            f"{k} {n}" for k, n in sorted(result["reloads_during_restart"].items())))
    print(f"longest time /hello did not answer 200: {result['longest_unavailable_s'] * 1000:.0f} ms")
    if result["kill_to_served_s"]:
        t = result["kill_to_served_s"]
        print(f"kill -> last accepted routes served by a new Caddy: p50 {t['p50'] * 1000:.0f} ms, "
              f"p99 {t['p99'] * 1000:.0f} ms, max {t['max'] * 1000:.0f} ms")
        print("  median by kind: " + ", ".join(
            f"{k} {v * 1000:.0f} ms" for k, v in result["kill_to_served_s_by_kind"].items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    print(f"violations: {len(result['violations'])}")
    for v in result["violations"]:
        print(f"  {v}")
    sys.exit(1 if result["violations"] else 0)


if __name__ == "__main__":
    main()
