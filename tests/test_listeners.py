"""TCP listeners of a real supd: mutual TLS and certificate roles, plaintext on loopback, start-up refusals.

One supd serves the module: a mutual-TLS listener (client certificates from a test CA, ``ops`` admin,
``viewer`` read) and a plaintext loopback listener with a tokens file and ``--health-unauthenticated``.
supctl runs as a user would, so its one-line TLS errors are checked as printed.
"""

from __future__ import annotations

import pathlib
import subprocess
from collections.abc import Iterator

import grpc
import pytest
import trustme
from credentials import Pki, call_code, connection, list_request, new_token, stub, token_file, write_tokens
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_cli import ENV, assert_one_line_error, supctl_argv

from supervisor._daemon.settings import ConfigError, parse_args
from supervisor.testing import SupervisorProcess, free_port, running_supervisor, supd_command
from supervisor.v1 import supervisor_pb2 as pb

TOKEN = new_token()


class Supd:
    def __init__(self, sup: SupervisorProcess, pki: Pki, ports: tuple[int, int, int]) -> None:
        self.sup, self.pki = sup, pki
        self.tls_address = f"localhost:{ports[0]}"
        self.plain_address = f"127.0.0.1:{ports[1]}"
        self.probe_address = f"127.0.0.1:{ports[2]}"

    def mtls(self, name: str, ca: trustme.CA | None = None) -> grpc.Channel:
        cert, key = self.pki.client_cert(name, ca)
        return connection(self.tls_address, ca_file=self.pki.ca_file, cert_file=cert, key_file=key).channel()

    def supctl(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(supctl_argv(*args), env=ENV, capture_output=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def supd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supd]:
    tmp = tmp_path_factory.mktemp("listeners")
    pki = Pki(tmp / "pki")
    tokens = tmp / "tokens"
    write_tokens(tokens, [f"admin {TOKEN}"])
    ports = tls_port, plain_port, probe_port = free_port(), free_port(), free_port()
    args = [
        "--listen", f"127.0.0.1:{tls_port}", *pki.server_args(), "--tls-client-ca", pki.client_ca_file,
        "--tls-client-role", "ops=admin", "--tls-client-role", "viewer=read",
        "--listen-insecure", f"127.0.0.1:{plain_port}", "--tokens-file", str(tokens), "--health-unauthenticated",
        "--listen-health", f"127.0.0.1:{probe_port}",
    ]
    with running_supervisor(tmp, args, env={"PYTHONPATH": ENV["PYTHONPATH"]}) as sup:
        yield Supd(sup, pki, ports)


def test_client_certificates_map_to_roles(supd: Supd) -> None:
    with supd.mtls("ops") as channel:
        code, details = call_code(lambda: stub(channel).Stop(pb.StopRequest(name="ghost"), timeout=10))
        assert code == grpc.StatusCode.NOT_FOUND, details  # admitted: the service itself answered
    with supd.mtls("viewer") as channel:
        assert list_request(channel) == (grpc.StatusCode.OK, "")
        code, details = call_code(lambda: stub(channel).Stop(pb.StopRequest(name="ghost"), timeout=10))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert details == "Stop needs the admin role; this client certificate has the read role"
    with supd.mtls("stranger") as channel:  # signed by the CA but mapped to no role: default-deny
        code, details = list_request(channel)
        assert code == grpc.StatusCode.PERMISSION_DENIED and "has no role" in details


def test_a_client_certificate_from_another_ca_is_refused(supd: Supd) -> None:
    with supd.mtls("ops", ca=trustme.CA()) as channel:
        assert list_request(channel)[0] == grpc.StatusCode.UNAVAILABLE
    cert, key = supd.pki.client_cert("outsider", trustme.CA())
    result = supd.supctl(supd.tls_address, "--ca-file", supd.pki.ca_file, "--cert-file", cert, "--key-file", key, "ls")
    err = assert_one_line_error(result, 3)
    assert f"may not accept the client certificate {cert}" in err


def test_supctl_names_what_is_wrong_with_tls(supd: Supd) -> None:
    address, ca = supd.tls_address, supd.pki.ca_file
    err = assert_one_line_error(supd.supctl(address, "--ca-file", ca, "ls"), 3)
    assert "may require a client certificate (give --cert-file and --key-file)" in err
    err = assert_one_line_error(supd.supctl(address, "ls"), 3)
    assert f"supd's certificate at {address} is not trusted by the system's roots (give --ca-file)" in err
    err = assert_one_line_error(supd.supctl(address, "--ca-file", ca, "--server-name", "other.test", "ls"), 3)
    assert "does not name 'other.test'" in err
    err = assert_one_line_error(supd.supctl(address, "--insecure", "ls"), 3)
    assert "the listener may need TLS (drop --insecure)" in err
    err = assert_one_line_error(supd.supctl(supd.plain_address, "--ca-file", ca, "ls"), 3)
    assert "does not speak TLS there" in err


def test_plaintext_on_loopback_takes_a_token(supd: Supd) -> None:
    with connection(supd.plain_address, insecure=True).channel() as channel:
        code, details = list_request(channel)
        assert code == grpc.StatusCode.UNAUTHENTICATED and "--token-file" in details
    given = token_file(supd.pki.directory, TOKEN)
    with connection(supd.plain_address, insecure=True, token_file=given).channel() as channel:
        assert list_request(channel) == (grpc.StatusCode.OK, "")


def test_health_without_credentials_when_configured(supd: Supd) -> None:
    with connection(supd.plain_address, insecure=True).channel() as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert list_request(channel)[0] == grpc.StatusCode.UNAUTHENTICATED  # only grpc.health.v1 is open


def test_the_probe_port_answers_check_and_nothing_else(supd: Supd) -> None:
    with grpc.insecure_channel(supd.probe_address) as channel:  # kubelet's probe: plaintext, no credentials
        health, request = health_pb2_grpc.HealthStub(channel), health_pb2.HealthCheckRequest()
        assert health.Check(request, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        code, _ = call_code(lambda: next(health.Watch(request, timeout=10)))
        assert code == grpc.StatusCode.UNIMPLEMENTED
        assert list_request(channel)[0] == grpc.StatusCode.UNIMPLEMENTED
    given = token_file(supd.pki.directory, TOKEN)
    with connection(supd.probe_address, insecure=True, token_file=given).channel() as channel:
        assert list_request(channel)[0] == grpc.StatusCode.UNIMPLEMENTED  # a token opens nothing more there
    # supctl pointed at it by mistake says what the port is.
    result = subprocess.run(
        supctl_argv(supd.probe_address, "--insecure", "ls"), capture_output=True, timeout=60, check=False, env=ENV
    )
    err = assert_one_line_error(result, 1)
    assert "serves grpc.health.v1 alone" in err, err


def _start(tmp_path: pathlib.Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    socket = ["--socket", str(tmp_path / "run" / "supd.sock"), "--state-dir", str(tmp_path / "state")]
    return subprocess.run([*supd_command(), *socket, *args], capture_output=True, timeout=60, check=False, env=ENV)


def test_plaintext_off_loopback_is_refused_at_start(tmp_path: pathlib.Path) -> None:
    tokens = tmp_path / "tokens"
    write_tokens(tokens, [f"admin {TOKEN}"])
    result = _start(tmp_path, "--listen-insecure", "0.0.0.0:7070", "--tokens-file", str(tokens))
    assert result.returncode == 2
    assert result.stderr.decode() == (
        "supd: --listen-insecure 0.0.0.0:7070: plaintext TCP is served on a loopback address only (127.0.0.1,"
        " [::1] or localhost); for other addresses use --listen with --tls-cert and --tls-key\n"
    )


def test_a_busy_port_is_refused_at_start(supd: Supd, tmp_path: pathlib.Path) -> None:
    tokens = tmp_path / "tokens"
    write_tokens(tokens, [f"admin {TOKEN}"])
    result = _start(tmp_path, "--listen-insecure", supd.plain_address, "--tokens-file", str(tokens))
    assert result.returncode == 3, result.stderr
    last = result.stderr.decode().splitlines()[-1]
    assert last == f"supd: cannot listen on {supd.plain_address}: the port is in use (another supd, or another" \
        " program); stop it or choose another port", last
    assert not (tmp_path / "run" / "supd.sock").exists()


def _settings_error(*args: str) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_args(["--socket", "/tmp/unused.sock", *args])
    return str(raised.value)


def test_settings_that_cannot_work_are_refused(tmp_path: pathlib.Path) -> None:
    pki = Pki(tmp_path / "pki")
    tokens = tmp_path / "tokens"
    write_tokens(tokens, [f"admin {TOKEN}"])
    listen = ["--listen", "127.0.0.1:7443"]
    assert "needs --tls-cert FILE and --tls-key FILE" in _settings_error(*listen, "--tokens-file", str(tokens))
    assert "callers must be authenticated" in _settings_error(*listen, *pki.server_args())
    plain = ["--listen-insecure", "127.0.0.1:7070", "--tokens-file", str(tokens)]
    assert "apply to --listen only" in _settings_error(*plain, *pki.server_args())
    assert "give --tokens-file FILE" in _settings_error("--listen-insecure", "[::1]:7070")
    assert "applies to TCP listeners only" in _settings_error("--tokens-file", str(tokens))
    assert "must be HOST:PORT" in _settings_error("--listen-insecure", "7070", "--tokens-file", str(tokens))
    write_tokens(tmp_path / "empty", ["# nobody yet"])
    assert "no tokens" in _settings_error(*plain[:2], "--tokens-file", str(tmp_path / "empty"))
    roles = ["--tls-client-role", "ops=admin"]
    assert "checked only with --tls-client-ca" in _settings_error(*listen, *pki.server_args(), *roles)
    client_ca = ["--tls-client-ca", pki.client_ca_file]
    bad_role = ["--tls-client-role", "ops=root"]
    assert "ROLE read or admin" in _settings_error(*listen, *pki.server_args(), *client_ca, *bad_role)
    swapped = ["--tls-cert", pki.key_file, "--tls-key", pki.cert_file]
    assert "not a PEM certificate chain and its key" in _settings_error(*listen, *swapped, *client_ca)


def test_the_probe_port_may_listen_anywhere_and_alone() -> None:
    settings = parse_args(["--socket", "/tmp/unused.sock", "--listen-health", "0.0.0.0:7071"])
    assert settings.listen is not None
    assert settings.listen.probe_endpoints == ("0.0.0.0:7071",) and settings.listen.endpoints == ()
    assert settings.listen.interceptors() == []
    assert settings.listen.summary() == ["0.0.0.0:7071 health-only"]


def test_listeners_from_the_config_file(tmp_path: pathlib.Path) -> None:
    tokens = tmp_path / "tokens"
    write_tokens(tokens, [f"read {TOKEN}"])
    config = tmp_path / "supd.toml"
    config.write_text(f'[supervisor]\nlisten_insecure = ["localhost:7070", "[::1]:7071"]\ntokens_file = "{tokens}"\n')
    settings = parse_args(["--socket", "/tmp/unused.sock", "--config", str(config)])
    assert settings.listen is not None
    assert settings.listen.endpoints == (("localhost:7070", False), ("[::1]:7071", False))
    config.write_text('[supervisor]\nlisten_insecure = "localhost:7070"\n')
    assert "supervisor.listen_insecure: must be a list of 'HOST:PORT' strings" in _settings_error(
        "--config", str(config)
    )
