"""Who holds a port: real listeners in subprocesses, found by socket inode, never by name.

Guards seed 02, fix 1: after a crash the old Caddy still held its admin port and
was killed with ``pkill -f "caddy run"``. The holder must be named precisely
(pid, start time, uid, environment marker) before anything may signal it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest
import structlog
from structlog.testing import capture_logs

from supervisor._daemon.children import ports
from supervisor._daemon.children.ports import (
    CMDLINE_MAX,
    PortSpec,
    find_holders,
    find_holders_report,
    find_sockets,
    pin_holder,
    port_is_free,
)
from supervisor._daemon.children.sessions import read_stat
from supervisor.testing import wait_until

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Binds to an address (port 0: any free one), listens for tcp, optionally forks so that two processes share the
# socket, prints "PORT CHILD_PID" once the socket exists, and holds it until stdin closes.
HOLD = r"""
import os, socket, sys
address, protocol, port, fork = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "fork"
s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET,
                  socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM)
s.bind((address, port))
if protocol == "tcp":
    s.listen()
child = os.fork() if fork else -1
if child == 0:
    sys.stdin.read()
    os._exit(0)
print(s.getsockname()[1], child, flush=True)
sys.stdin.read()
if child > 0:
    os.waitpid(child, 0)
"""

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's interpreter may sit where another user cannot run it

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or not os.access(SYSTEM_PYTHON, os.X_OK),
    reason="needs root, setpriv and /usr/bin/python3 to run a process as nobody",
)


@dataclasses.dataclass(frozen=True)
class Held:
    pid: int
    port: int
    child: int  # the forked second holder, or -1

    def spec(self, protocol: str = "tcp") -> PortSpec:
        return PortSpec(self.port, protocol)


@contextlib.contextmanager
def holding(
    address: str = "0.0.0.0",
    protocol: str = "tcp",
    port: int = 0,
    *,
    fork: bool = False,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
    python: str = sys.executable,
) -> Iterator[Held]:
    """A subprocess holding ``port`` (0: a free one) until the block ends; yields once the socket exists."""
    argv = [*prefix, python, "-I", "-S", "-c", HOLD, address, protocol, str(port), "fork" if fork else "-"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10.0)
        assert ready, "the holder did not report its port within 10 s"
        line = proc.stdout.readline().split()
        assert len(line) == 2, f"the holder failed (exit {proc.wait(5)})"
        yield Held(proc.pid, int(line[0]), int(line[1]))
    finally:
        proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def free_port() -> int:
    """A tcp port nobody holds right now (on IPv4 or IPv6)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::", 0))
        return int(s.getsockname()[1])


def only(holders: list[ports.Holder]) -> ports.Holder:
    assert len(holders) == 1, holders
    return holders[0]


def test_a_tcp_listener_on_ipv4_is_named_by_pid_start_time_uid_and_argv():
    with holding("0.0.0.0", "tcp") as held:
        holder = only(find_holders([held.spec()]))
        stat = read_stat(held.pid)
        assert stat is not None
        assert (holder.pid, holder.start_ticks, holder.uid) == (held.pid, stat.start_ticks, os.getuid())
        assert holder.port == PortSpec(held.port, "tcp")
        assert holder.cmdline.startswith(f"{sys.executable} -I -S -c \nimport os, socket, sys\n")
        assert len(holder.cmdline) == CMDLINE_MAX  # the program text is longer: cut
        assert holder.marker == {}
        assert not port_is_free(held.spec())
    assert wait_until(
        lambda: held.pid not in {h.pid for h in find_holders([held.spec()])}, 5, what="the port to be released"
    )


def test_an_ipv6_wildcard_listener_is_found_once_per_process_and_port():
    with holding("::", "tcp") as held:
        holder = only(find_holders([held.spec()]))
        assert holder.pid == held.pid
        (sock,) = find_sockets([held.spec()])
        assert (sock.family, sock.address) == (socket.AF_INET6, "::")


def test_a_pinned_holder_is_signalled_through_its_pidfd_and_a_gone_one_is_not_pinned():
    with holding() as held:
        holder = only(find_holders([held.spec()]))
        assert pin_holder(dataclasses.replace(holder, start_ticks=holder.start_ticks + 1)) is None
        fd = pin_holder(holder)
        assert fd is not None
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            # Unreaped, it is a zombie: ended, so no longer pinned.
            assert wait_until(lambda: (f := pin_holder(holder)) is None or os.close(f), 5, what="the holder to end")
        finally:
            os.close(fd)


def test_a_bound_udp_socket_holds_the_udp_port_and_not_the_tcp_one():
    with holding("0.0.0.0", "udp") as held:
        holder = only(find_holders([held.spec("udp")]))
        assert (holder.pid, holder.port) == (held.pid, PortSpec(held.port, "udp"))
        # Another process may hold the same number over tcp (port numbers are per protocol): not us, though.
        assert held.pid not in {h.pid for h in find_holders([held.spec("tcp")])}
        assert not port_is_free(held.spec("udp"))


def test_a_listener_shared_through_fork_has_two_holders():
    with holding("0.0.0.0", "tcp", fork=True) as held:
        holders = find_holders([held.spec()])
        assert sorted(h.pid for h in holders) == sorted([held.pid, held.child])
        for h in holders:
            stat = read_stat(h.pid)
            assert stat is not None and h.start_ticks == stat.start_ticks


def test_the_marker_holds_the_requested_variables_that_are_set():
    env = {**os.environ, "SUPD_CHILD": "web", "UNRELATED": "x"}
    markers = ["SUPD_CHILD", "SUPD_INSTANCE"]
    with holding(env=env) as marked, holding() as plain:
        found = {h.pid: h.marker for h in find_holders([marked.spec(), plain.spec()], markers)}
        assert found == {marked.pid: {"SUPD_CHILD": "web"}, plain.pid: {}}


def test_ports_nobody_holds_give_nothing():
    spec = PortSpec(free_port())
    assert find_holders([spec, PortSpec(spec.port, "udp")]) == []
    assert find_holders_report([spec]) == ([], [])
    assert find_holders([]) == []


def test_port_is_free_before_the_listener_binds_and_after_it_ends():
    port = free_port()
    spec = PortSpec(port)
    assert port_is_free(spec)
    with holding("::", "tcp", port) as held:
        assert held.port == port
        assert not port_is_free(spec)
    assert wait_until(lambda: port_is_free(spec), 5, what=f"{spec} to be free")


def test_only_the_listening_socket_holds_a_tcp_port_not_its_connections():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        spec = PortSpec(listener.getsockname()[1])
        client = socket.create_connection(listener.getsockname(), timeout=5)
        accepted, _ = listener.accept()  # ESTABLISHED, with the same local port
        with client, accepted:
            (sock,) = find_sockets([spec])
            assert sock.inode == os.fstat(listener.fileno()).st_ino
            listener.close()
            assert find_sockets([spec]) == []
            assert port_is_free(spec)  # a new listener can bind with SO_REUSEADDR, as servers do


@pytest.fixture
def debug_logs() -> Iterator[list[structlog.typing.EventDict]]:
    """Captured structlog events, debug included whatever level an earlier test configured."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**saved)


def test_the_proc_net_fallback_gives_the_same_answer(monkeypatch, debug_logs):
    with (
        holding("0.0.0.0", "tcp") as v4,
        holding("::", "tcp", fork=True) as v6,
        holding("::1", "udp") as udp,
        holding("127.0.0.1", "udp") as lo,
    ):
        specs = [v4.spec(), v6.spec(), udp.spec("udp"), lo.spec("udp"), PortSpec(free_port())]
        by_netlink = (find_sockets(specs), find_holders_report(specs, ["PATH"]))
        assert not debug_logs

        def refused(family: int, protocol: str, numbers: frozenset[int]) -> list[tuple[int, str, int, int]]:
            raise PermissionError(errno.EPERM, "refused by a seccomp filter")

        monkeypatch.setattr(ports, "_netlink_sockets", refused)
        by_proc_net = (find_sockets(specs), find_holders_report(specs, ["PATH"]))
    assert by_proc_net == by_netlink
    assert len(by_netlink[1][0]) == 5  # v4, two for v6 (fork), two udp
    assert {(sock.port.port, sock.address) for sock in by_netlink[0]} == {
        (v4.port, "0.0.0.0"),
        (v6.port, "::"),
        (udp.port, "::1"),
        (lo.port, "127.0.0.1"),
    }
    refusals = [e for e in debug_logs if e["event"] == "ports.netlink.refused"]
    assert {(e["family"], e["protocol"], e["log_level"]) for e in refusals} == {
        ("AF_INET", "tcp", "debug"),
        ("AF_INET6", "tcp", "debug"),
        ("AF_INET", "udp", "debug"),
        ("AF_INET6", "udp", "debug"),
    }


@needs_root
def test_a_holder_of_another_user_is_found_with_its_uid_as_root():
    nobody = pwd.getpwnam("nobody").pw_uid
    env = {**os.environ, "SUPD_CHILD": "theirs"}
    with holding(prefix=NOBODY, python=SYSTEM_PYTHON, env=env) as held:
        holders, unattributed = find_holders_report([held.spec()], ["SUPD_CHILD"])
        holder = only(holders)
        assert (holder.pid, holder.uid, holder.marker) == (held.pid, nobody, {"SUPD_CHILD": "theirs"})
        assert unattributed == []


@needs_root
def test_a_caller_that_cannot_read_the_holders_fds_reports_the_port_as_unattributed():
    site = [p for p in sys.path if p.endswith("site-packages")]
    probe = (
        "import json, sys\n"
        "from supervisor._daemon.children.ports import PortSpec, find_holders_report\n"
        "holders, unattributed = find_holders_report([PortSpec(int(sys.argv[1]))])\n"
        "print(json.dumps([[h.pid for h in holders], [p.port for p in unattributed]]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, *site])}
    with holding() as held:
        out = subprocess.run(
            [*NOBODY, SYSTEM_PYTHON, "-c", probe, str(held.port)], env=env, capture_output=True, timeout=10, check=True
        )
    assert json.loads(out.stdout) == [[], [held.port]]


def test_an_empty_argv_shows_as_the_command_name_in_brackets():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # An exited, unreaped process (a zombie) has an empty argv, like a kernel thread.
        wait_until(lambda: (s := read_stat(proc.pid)) is not None and s.zombie, 5, what="a zombie")
        fd = os.open(f"/proc/{proc.pid}", os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert ports._cmdline(fd) == f"[{os.path.basename(sys.executable)[:15]}]"  # comm: at most 15 bytes
        finally:
            os.close(fd)
    finally:
        proc.wait()


@pytest.mark.parametrize(
    ("port", "protocol", "field"), [(0, "tcp", "port"), (70000, "tcp", "port"), (80, "sctp", "protocol")]
)
def test_a_bad_port_spec_names_the_field(port, protocol, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        PortSpec(port, protocol)
