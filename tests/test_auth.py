"""Bearer tokens and roles on a TLS listener of a real supd; the interceptor's log and counts in process.

One supd serves the module: a TLS listener on localhost with a tokens file of a read and an admin
token. Clients are real ``supervisor.client.Connection`` channels and real supctl processes.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
from collections.abc import Iterator

import anyio
import grpc
import pytest
from credentials import Pki, call_code, connection, list_request, new_token, stub, token_file, write_tokens
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from structlog.testing import capture_logs
from test_cli import ENV, assert_one_line_error, read_until, supctl_argv

from supervisor._daemon.api.auth import AuthInterceptor
from supervisor._daemon.api.tokens import Role, TokenError, Tokens, parse_tokens
from supervisor.testing import SupervisorProcess, free_port, running_supervisor, wait_until
from supervisor.v1 import supervisor_pb2 as pb

READ, ADMIN, ROTATING = new_token(), new_token(), new_token()


class Listener:
    def __init__(self, sup: SupervisorProcess, pki: Pki, tokens: pathlib.Path, port: int) -> None:
        self.sup, self.pki, self.tokens, self.port = sup, pki, tokens, port
        self.address = f"localhost:{self.port}"

    def channel(self, token: str | None = None) -> grpc.Channel:
        given = token_file(self.pki.directory, token) if token is not None else None
        return connection(self.address, ca_file=self.pki.ca_file, token_file=given).channel()

    def supctl(self, token: str, *args: str) -> list[str]:
        files = ["--ca-file", self.pki.ca_file, "--token-file", token_file(self.pki.directory, token)]
        return supctl_argv(self.address, *files, *args)

    def run(self, token: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.supctl(token, *args), env=ENV, capture_output=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    tmp = tmp_path_factory.mktemp("auth")
    pki = Pki(tmp / "pki")
    tokens = tmp / "tokens"
    write_tokens(tokens, ["# supd's callers", f"read {READ}", f"{ADMIN} admin", f"admin {ROTATING}  # rotated below"])
    port = free_port()
    args = ["--listen", f"127.0.0.1:{port}", *pki.server_args(), "--tokens-file", str(tokens)]
    with running_supervisor(tmp, args, env={"PYTHONPATH": ENV["PYTHONPATH"]}) as sup:
        yield Listener(sup, pki, tokens, port)


def test_a_call_without_a_token_is_unauthenticated(tls: Listener) -> None:
    with tls.channel() as channel:
        code, details = list_request(channel)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "--token-file" in details
        # A response stream is refused before its first message.
        code, _ = call_code(lambda: list(stub(channel).Stream(pb.StreamRequest(name="any"), timeout=10)))
        assert code == grpc.StatusCode.UNAUTHENTICATED


def test_a_wrong_token_is_unauthenticated_never_echoed_and_logged(tls: Listener) -> None:
    wrong = new_token()
    with tls.channel(wrong) as channel:
        code, details = list_request(channel)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "not accepted" in details and wrong not in details
    events = [json.loads(line) for line in tls.sup.stderr_text().splitlines() if "rpc.auth.denied" in line]
    denied = [e for e in events if e["method"] == "/supervisor.v1.Supervisor/List" and e["reason"] == "unauthenticated"]
    assert denied and denied[-1]["peer"].startswith("ipv4:127.0.0.1:")
    assert wrong not in tls.sup.stderr_text()


def test_read_token_lists_and_streams_but_changes_nothing(tls: Listener) -> None:
    with tls.channel(READ) as channel:
        assert list_request(channel) == (grpc.StatusCode.OK, "")
        assert stub(channel).Health(pb.HealthRequest(), timeout=10) is not None
        spec = pb.ChildSpec(name="nope", argv=["/bin/true"])
        refused = {
            "Spawn": lambda: stub(channel).Spawn(pb.SpawnRequest(spec=spec), timeout=10),
            "Stop": lambda: stub(channel).Stop(pb.StopRequest(name="x"), timeout=10),
            "Signal": lambda: stub(channel).Signal(pb.SignalRequest(name="x", signal=1), timeout=10),
            "Restart": lambda: stub(channel).Restart(pb.RestartRequest(name="x"), timeout=10),
            "Remove": lambda: stub(channel).Remove(pb.RemoveRequest(name="x"), timeout=10),
            "Reload": lambda: stub(channel).Reload(pb.ReloadRequest(name="x"), timeout=10),
            "Shutdown": lambda: stub(channel).Shutdown(pb.ShutdownRequest(), timeout=10),
        }
        for method, call in refused.items():
            code, details = call_code(call)
            assert code == grpc.StatusCode.PERMISSION_DENIED, (method, code, details)
            assert details == f"{method} needs the admin role; this token has the read role"
    with tls.sup.channel() as channel:  # nothing happened: supd runs, no child was declared
        assert not stub(channel).List(pb.ListRequest(), timeout=10).children


def test_admin_token_spawns_and_the_unix_socket_needs_none(tls: Listener) -> None:
    spec = pb.ChildSpec(name="admin-made", argv=["sleep", "1000"], restart=pb.RESTART_POLICY_NEVER)
    with tls.channel(ADMIN) as channel:
        assert stub(channel).Spawn(pb.SpawnRequest(spec=spec), timeout=10).child.spec.name == "admin-made"
    with tls.sup.channel() as channel:  # file permissions guard the socket; no token there
        assert [c.spec.name for c in stub(channel).List(pb.ListRequest(), timeout=10).children] == ["admin-made"]
        stub(channel).Remove(pb.RemoveRequest(name="admin-made"), timeout=30)


def test_grpc_health_needs_credentials_unless_configured(tls: Listener) -> None:
    request = health_pb2.HealthCheckRequest()
    with tls.channel() as channel:
        code, _ = call_code(lambda: health_pb2_grpc.HealthStub(channel).Check(request, timeout=10))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    with tls.channel(READ) as channel:
        assert health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status == 1  # SERVING


def test_rotating_the_tokens_file_takes_effect_without_a_restart(tls: Listener) -> None:
    pid = tls.sup.proc.pid
    with tls.channel(ROTATING) as channel:
        assert list_request(channel)[0] == grpc.StatusCode.OK
    replacement = new_token()
    write_tokens(tls.tokens, [f"read {READ}", f"{ADMIN} admin", f"admin {replacement}"])
    with tls.channel(ROTATING) as channel:
        assert list_request(channel)[0] == grpc.StatusCode.UNAUTHENTICATED
    with tls.channel(replacement) as channel:
        assert list_request(channel)[0] == grpc.StatusCode.OK
    # A broken file keeps the tokens in force, and says so.
    write_tokens(tls.tokens, ["admin short"])
    with tls.channel(replacement) as channel:
        assert list_request(channel)[0] == grpc.StatusCode.OK
    wait_until(lambda: "rpc.auth.tokens.reload_failed" in tls.sup.stderr_text(), what="reload_failed logged")
    write_tokens(tls.tokens, [f"read {READ}", f"{ADMIN} admin"])
    assert tls.sup.proc.pid == pid and tls.sup.proc.poll() is None
    assert "rpc.auth.tokens.reloaded" in tls.sup.stderr_text()


def test_supctl_over_tls_with_a_token_ls_and_follow(tls: Listener) -> None:
    spawned = tls.run(ADMIN, "spawn", "talker", "--", "sh", "-c", "echo hello-over-tls; exec sleep 1000")
    assert spawned.returncode == 0, spawned.stderr
    try:
        listed = tls.run(READ, "ls")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.decode().splitlines()[1].split()[0] == "talker"
        follow = tls.supctl(READ, "logs", "-f", "--from-seq", "0", "talker")
        with subprocess.Popen(follow, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as follower:
            try:
                read_until(follower, b"hello-over-tls\n")
            finally:
                follower.kill()
        err = assert_one_line_error(tls.run(READ, "stop", "talker"), 9)
        assert "Stop needs the admin role" in err and READ not in err
    finally:
        assert tls.run(ADMIN, "rm", "talker").returncode == 0


def test_tokens_file_format() -> None:
    text = f"# comment\n\nread {READ}\n{ADMIN} admin  # trailing comment\n"
    assert parse_tokens(text, "t") == [(READ, Role.READ), (ADMIN, Role.ADMIN)]
    for bad, why in [
        (f"writer {READ}", "must be 'ROLE TOKEN'"),
        (f"read {READ} extra", "must be 'ROLE TOKEN'"),
        ("read admin", "must be 'ROLE TOKEN'"),
        ("admin short", "16 to 4096"),
    ]:
        with pytest.raises(TokenError, match=why) as raised:
            parse_tokens(f"# first\n{bad}\n", "tokens")
        assert str(raised.value).startswith("tokens:2: ")
        assert READ not in str(raised.value)


def test_an_empty_tokens_file_is_refused_at_start(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# nobody yet\n")
    with pytest.raises(TokenError, match="no tokens"):
        Tokens(str(path))


def test_a_change_within_one_clock_tick_is_still_seen(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "tokens"
    first, second = new_token(), new_token()

    def rewrite_in_place(token: str, mtime_ns: int) -> None:  # same inode, same size, and the mtime forced
        path.write_text(f"admin {token}\n")
        os.utime(path, ns=(mtime_ns, mtime_ns))

    recent = time.time_ns() + 3600 * 10**9  # "changed just now" for the whole test, however slow the machine
    rewrite_in_place(first, recent)
    tokens = Tokens(str(path))
    assert tokens.role_of(first) is Role.ADMIN
    rewrite_in_place(second, recent)
    assert tokens.role_of(first) is None and tokens.role_of(second) is Role.ADMIN
    # Once a change is old, an unchanged stamp means an unchanged file: the stat alone answers.
    old = time.time_ns() - 3600 * 10**9
    rewrite_in_place(second, old)
    assert tokens.role_of(second) is Role.ADMIN
    rewrite_in_place(first, old)
    assert tokens.role_of(second) is Role.ADMIN and tokens.reloads == 1


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_each_refusal_is_logged_and_counted_without_the_token(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "tokens"
    write_tokens(path, [f"read {READ}"])
    interceptor = AuthInterceptor(Tokens(str(path)), None)
    server = grpc.aio.server(interceptors=[interceptor])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        with anyio.fail_after(20), capture_logs() as logs:
            for token in (None, "x" * 20, READ):
                metadata = (("authorization", f"Bearer {token}"),) if token else ()
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    try:
                        await health_pb2_grpc.HealthStub(channel).Check(
                            health_pb2.HealthCheckRequest(), metadata=metadata, timeout=10
                        )
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(None)
    stats = interceptor.statistics()
    assert stats.denied == {"unauthenticated": 2} and stats.allowed == {"read": 1}
    denied = [e for e in logs if e["event"] == "rpc.auth.denied"]
    assert [e["count"] for e in denied] == [1, 2]
    assert all(e["method"] == "/grpc.health.v1.Health/Check" for e in denied)
    assert all(e["peer"].startswith("ipv4:127.0.0.1:") for e in denied)
    assert "x" * 20 not in repr(logs) and READ not in repr(logs)


def test_a_tokens_file_others_may_read_is_used_and_warned_about(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"admin {ADMIN}\n")
    for mode, warned in ((0o644, True), (0o600, False), (0o640, False)):
        path.chmod(mode)
        with capture_logs() as logs:
            tokens = Tokens(str(path))
        assert tokens.role_of(ADMIN) is Role.ADMIN
        found = [e for e in logs if e["event"] == "rpc.auth.tokens.readable_by_others"]
        assert bool(found) is warned, (oct(mode), logs)
        assert ADMIN not in repr(logs)
