"""supctl top against a real supd: the live view driven in tmux as a person would, and the plain tables.

The view runs in a tmux pane of a fixed size (120x30) on a tmux server of the
test's own; the test reads the pane (``capture-pane``) under a deadline and
types keys (``send-keys``). On a failure the assertion shows the screen as it
was. tmux is installed with apt-get when missing (we are root in CI); the tests
skip, saying why, only when that fails.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from supervisor.client import Connection
from supervisor.testing import SupervisorProcess, running_supervisor, wait_until
from supervisor.v1 import supervisor_pb2 as pb

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
ZOO = str(ROOT / "tests" / "zoo.py")
WIDTH, HEIGHT = 120, 30


def supctl_argv(address: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "supervisor.cli", "--addr", address, *args]


def supctl(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(supctl_argv(address, *args), capture_output=True, text=True, env=ENV, timeout=60, check=False)


def spawn_children(sup: SupervisorProcess) -> None:
    """alpha ticks ten lines a second, beta waits, gamma exited with code 3 and stays down."""
    with sup.client(timeout=10) as supd:
        supd.spawn(name="alpha", argv=[sys.executable, ZOO, "ticker", "0.1"])
        supd.spawn(name="beta", argv=[sys.executable, ZOO, "term-fast"])
        supd.spawn(name="gamma", argv=[sys.executable, ZOO, "exit", "3"], restart="never")
        wait_until(lambda: supd.child("gamma").state == pb.CHILD_STATE_EXITED, what="gamma exited")


def _tmux_available() -> str | None:
    """Why tmux cannot be had, or None when it is there (installed now if need be)."""
    if shutil.which("tmux"):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "tmux is not installed and cannot be installed here (not root, or no apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "tmux"]):
        done = subprocess.run(step, capture_output=True, text=True, env=env, timeout=300, check=False)
        if done.returncode != 0:
            return f"tmux is not installed and `{shlex.join(step)}` failed: {done.stderr.strip()[-300:]}"
    return None


class Pane:
    """One command in a detached tmux session of WIDTH x HEIGHT, on a tmux server of its own."""

    def __init__(self, argv: list[str], workdir: pathlib.Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        # A server of its own whose socket goes with the test's directory (-L would leave one in /tmp/tmux-UID).
        self.server = ["tmux", "-S", str(workdir / f"tmux-{uuid.uuid4().hex[:8]}.sock"), "-f", os.devnull]
        self.rc_path, self.err_path = workdir / "top.rc", workdir / "top.stderr"
        # The exit code lands in a file once the command ends; the pane stays until the server is killed.
        script = f"{shlex.join(argv)} 2>{shlex.quote(str(self.err_path))}; echo $? >{shlex.quote(str(self.rc_path))}"
        self.tmux("new-session", "-d", "-s", "top", "-x", str(WIDTH), "-y", str(HEIGHT), script + "; sleep 600")

    def tmux(self, *args: str) -> str:
        done = subprocess.run([*self.server, *args], capture_output=True, text=True, env=ENV, timeout=10, check=False)
        assert done.returncode == 0, f"tmux {shlex.join(args)}: {done.stderr}"
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "top", *keys)

    def shows(self, predicate: Callable[[str], object], what: str, timeout: float = 20.0) -> str:
        """Wait for a screen that satisfies ``predicate`` and return it; fail with the last screen shown."""
        seen = [""]

        def check() -> str | None:
            seen[0] = self.screen()
            return seen[0] if predicate(seen[0]) else None

        try:
            return wait_until(check, timeout=timeout, interval=0.05, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.framed(seen[0])}") from None

    def framed(self, text: str) -> str:
        """The screen as a picture: each row between bars, so blanks and cut-offs show."""
        bar = "+" + "-" * WIDTH + "+"
        rows = [f"|{line:<{WIDTH}}|" for line in text.rstrip("\n").split("\n")]
        err = self.err_path.read_text(errors="replace") if self.err_path.exists() else ""
        return "\n".join(["screen:", bar, *rows, bar, f"stderr of supctl: {err!r}"])

    def exit_code(self, timeout: float = 15.0) -> int:
        def ended() -> bool:
            return self.rc_path.exists() and self.rc_path.read_text().strip() != ""

        try:
            wait_until(ended, timeout=timeout, what="supctl top to exit")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.framed(self.screen())}") from None
        return int(self.rc_path.read_text())

    def close(self) -> None:
        subprocess.run([*self.server, "kill-server"], capture_output=True, timeout=10, check=False)


@pytest.fixture
def pane_of(tmp_path: pathlib.Path) -> Iterator[Callable[[list[str]], Pane]]:
    reason = _tmux_available()
    if reason:
        pytest.skip(reason)
    panes: list[Pane] = []

    def start(argv: list[str]) -> Pane:
        panes.append(Pane(argv, tmp_path))
        return panes[-1]

    yield start
    for pane in panes:
        pane.close()


def row(screen: str, name: str) -> list[str]:
    """The cells of a child's row in the view (the selection mark dropped); [] when it is not shown."""
    for line in screen.split("\n"):
        cells = line.lstrip(">").split()
        if cells[:1] == [name]:
            return cells
    return []


def unwrapped(screen: str) -> str:
    """The screen's text as one line: rich wraps long lines at spaces."""
    return " ".join(line.strip() for line in screen.split("\n") if line.strip())


def selected(screen: str) -> str | None:
    marked = [line for line in screen.split("\n") if line.startswith(">")]
    return marked[0].lstrip(">").split()[0] if marked else None


COLUMNS = ["NAME", "STATE", "HEALTH", "PID", "GEN", "RESTARTS", "UPTIME", "LINES/S", "DROPS", "LAST-EXIT"]


def test_top_shows_the_children_restarts_follows_and_stops_one_and_quits(tmp_path, pane_of):
    (tmp_path / "supd").mkdir()
    with running_supervisor(tmp_path / "supd", env={"PYTHONPATH": ENV["PYTHONPATH"]}) as sup:
        spawn_children(sup)
        with sup.client(timeout=10) as supd:
            beta_before = supd.child("beta")
        pane = pane_of(supctl_argv(sup.address, "top", "--interval", "0.5"))

        def table_ready(s: str) -> bool:  # every child, and alpha's rate measured (a second snapshot came)
            return all(row(s, n) for n in ("alpha", "beta", "gamma")) and row(s, "alpha")[7] != "-"

        screen = pane.shows(table_ready, "the three children with alpha's rate")
        header, _, rest = screen.partition("\n   NAME ")  # the header wraps when the address is long
        assert header.startswith("supd ") and ": 3 children, refreshed " in header, pane.framed(screen)
        assert sup.address in header.replace("\n", ""), pane.framed(screen)
        assert ["NAME", *rest.split("\n")[0].split()] == COLUMNS, pane.framed(screen)
        assert row(screen, "gamma")[1:3] == ["EXITED", "DOWN"] and row(screen, "gamma")[-2:] == ["exit", "3"]
        assert row(screen, "beta")[1:5] == ["RUNNING", "READY", str(beta_before.pid), "1"], pane.framed(screen)
        assert float(row(screen, "alpha")[7]) > 0, pane.framed(screen)  # ten lines a second
        assert selected(screen) == "alpha", pane.framed(screen)

        pane.keys("j")
        pane.shows(lambda s: selected(s) == "beta", "beta selected")
        pane.keys("r")  # an explicit restart: a new generation and pid (RESTARTS counts automatic restarts only)
        screen = pane.shows(lambda s: row(s, "beta")[4:5] == ["2"], "beta in its second generation")
        with sup.client(timeout=10) as supd:
            beta_after = supd.child("beta")
        assert beta_after.generation == 2 and beta_after.pid != beta_before.pid
        pane.shows(lambda s: row(s, "beta")[3] == str(beta_after.pid) and "restart beta: RUNNING" in s,
                   "beta's new pid and the outcome of the restart")

        pane.keys("k", "l")  # alpha's logs: its latest ticks, newest at the bottom
        screen = pane.shows(lambda s: s.startswith("logs of alpha") and s.count("tick ") >= 5, "alpha's lines")
        ticks = [int(n) for n in re.findall(r"^tick (\d+)$", screen, re.MULTILINE)]
        assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), pane.framed(screen)
        with sup.client(timeout=10) as supd:
            assert ticks[-1] < supd.child("alpha").next_seq
        pane.shows(lambda s: max(map(int, re.findall(r"^tick (\d+)$", s, re.MULTILINE)), default=0) > ticks[-1],
                   "alpha's next lines, followed live")
        pane.keys("Escape")
        pane.shows(table_ready, "the table again")

        pane.keys("j", "s")
        pane.shows(lambda s: "stop beta? y" in s, "the stop question")
        pane.keys("y")
        pane.shows(lambda s: row(s, "beta")[1:3] == ["STOPPED", "DOWN"], "beta stopped")
        with sup.client(timeout=10) as supd:
            assert supd.child("beta").state == pb.CHILD_STATE_STOPPED

        pane.keys("q")
        assert pane.exit_code() == 0
        assert pane.err_path.read_text() == ""


def test_top_says_supd_went_away_keeps_asking_and_shows_the_next_one(tmp_path, pane_of):
    workdir = tmp_path / "supd"
    workdir.mkdir()
    with running_supervisor(workdir, env={"PYTHONPATH": ENV["PYTHONPATH"]}) as first:
        with first.client(timeout=10) as supd:
            supd.spawn(name="before", argv=[sys.executable, ZOO, "term-fast"])
        pane = pane_of(supctl_argv(first.address, "top", "--interval", "0.2"))
        pane.shows(lambda s: row(s, "before"), "the first supd's child")
    gone = f"no supd is running at {first.address} (no such socket); retrying every 0.2s"
    screen = pane.shows(lambda s: gone in unwrapped(s), "word that supd went away")
    assert row(screen, "before")[1] == "RUNNING"  # the last table seen stays, under its refresh time
    with running_supervisor(workdir, env={"PYTHONPATH": ENV["PYTHONPATH"]}) as second:  # the same socket
        with second.client(timeout=10) as supd:
            supd.spawn(name="after", argv=[sys.executable, ZOO, "term-fast"])
        pane.shows(lambda s: row(s, "after") and "retrying" not in s, "the second supd's children")
        pane.keys("q")
        assert pane.exit_code() == 0


def test_top_unreachable_is_one_line_and_exit_3(tmp_path):
    address = f"unix://{tmp_path}/none.sock"
    done = supctl(address, "top", "--once")
    assert (done.returncode, done.stdout) == (3, "")
    assert done.stderr == f"supctl: no supd is running at {address} (no such socket)\n"


@pytest.fixture
def sup(tmp_path: pathlib.Path) -> Iterator[SupervisorProcess]:
    with running_supervisor(tmp_path, env={"PYTHONPATH": ENV["PYTHONPATH"]}) as handle:
        spawn_children(handle)
        yield handle


def table_of(block: str) -> dict[str, list[str]]:
    _, columns, *rows = block.split("\n")
    assert columns.split() == COLUMNS, block
    return {r.split()[0]: r.split() for r in rows}


def test_top_once_prints_one_table_with_measured_rates_and_exits_0(sup):
    done = supctl(sup.address, "top", "--once", "--interval", "0.5")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout.count("\n") == 5 and done.stdout.startswith("supd "), done.stdout
    assert ": 3 children, refreshed " in done.stdout and f", at {sup.address}\n" in done.stdout
    rows = table_of(done.stdout.rstrip("\n"))
    assert list(rows) == ["alpha", "beta", "gamma"]
    assert 2 <= float(rows["alpha"][7]) <= 20, done.stdout  # about ten lines a second, loosely: a loaded machine
    assert rows["beta"][7] == "0.0" and rows["gamma"][1:3] == ["EXITED", "DOWN"]


def test_top_to_a_pipe_prints_a_table_per_interval_and_exits_3_when_supd_goes(tmp_path):
    with running_supervisor(tmp_path, env={"PYTHONPATH": ENV["PYTHONPATH"]}) as handle:
        spawn_children(handle)
        argv = supctl_argv(handle.address, "top", "--interval", "0.2")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        assert proc.stdout is not None
        try:
            lines = [proc.stdout.readline() for _ in range(11)]  # header, columns, 3 rows; empty line; again
        except BaseException:
            proc.kill()
            raise
    out, err = proc.communicate(timeout=30)
    assert lines[5] == "\n", lines  # the separator
    first, second = "".join(lines[:5]).rstrip("\n"), "".join(lines[6:]).rstrip("\n")
    assert first.startswith("supd ") and second.startswith("supd "), lines
    assert table_of(first)["alpha"][7] == "-"  # no earlier snapshot yet
    assert float(table_of(second)["alpha"][7]) >= 0
    assert proc.returncode == 3, (out, err)  # supd went away: the one line and code of every command
    assert err.startswith("supctl: ") and handle.address in err and err.count("\n") == 1, err


def test_the_log_pane_keeps_the_last_lines_stops_on_close_and_says_why_a_stream_ended(sup):
    from supervisor._top.follow import Follower

    woken = threading.Event()
    follower = Follower(Connection(sup.address), "alpha", 5, woken.set)
    try:
        wait_until(lambda: [k for k, _ in follower.snapshot()[0]] == ["stdout"] * 5, what="five lines, no event")
        assert woken.is_set()
        lines, error = follower.snapshot()
        ticks = [int(text.removeprefix("tick ")) for kind, text in lines if kind == "stdout"]
        assert error is None and len(ticks) == 5 and ticks == list(range(ticks[0], ticks[0] + 5)), lines
    finally:
        follower.close()
    assert not follower.running and follower.snapshot()[1] is None  # closed on purpose: no error to show

    follower = Follower(Connection(sup.address), "gamma", 100, lambda: None)
    try:
        wait_until(lambda: follower.snapshot()[0], what="gamma's records so far")  # the Stream is under way
        with sup.client(timeout=10) as supd:
            supd.remove("gamma")
        wait_until(lambda: not follower.running, what="the stream of a removed child to end")
        lines, error = follower.snapshot()
        assert lines[-1] == ("event", "[gamma] removed") and error == (
            "the stream ended (the child was removed, or supd shut down)"
        ), (lines, error)
    finally:
        follower.close()


def test_supctl_ls_imports_no_terminal_library(sup):
    code = (
        "import sys, supervisor.cli\n"
        f"code = supervisor.cli.main(['--addr', {sup.address!r}, 'ls'])\n"
        "print(code, sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'textual'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60, check=True)
    assert done.stdout.splitlines()[-1] == "0 []", done
