"""supd's TOML config: every level checked, errors naming file, child, key and line.

Guards issue 15 item 9 (``[children.x.backoff] initail_seconds = 5`` was accepted and started with the default)
and item 14 (one child whose program is missing stopped supd from starting at all).
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

import pytest

from supervisor._daemon.config_file import ConfigError, load_config
from supervisor._daemon.settings import parse_args
from supervisor._daemon.toml_lines import key_line
from supervisor.testing import running_supervisor, supd_command
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from conftest import wait_state, zoo


def _error(tmp_path: pathlib.Path, text: str) -> str:
    config = tmp_path / "supd.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(str(config))
    return str(err.value).replace(str(config), "FILE")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[children.x]\nargv = ["sh"]\n\n[children.x.backoff]\ninitail_seconds = 5\n',
            "FILE:5: children.x: spec.backoff.initail_seconds: unknown key (known: initial_seconds, max_seconds,"
            " multiplier, reset_after_seconds), got 5",
        ),
        (
            '[children.x]\nargv = ["sh"]\nflap_limit = { max_restarts = 3, windows_seconds = 9 }\n',
            "FILE:3: children.x: spec.flap_limit.windows_seconds: unknown key (known: max_restarts,"
            " window_seconds), got 9",
        ),
        (
            '[children.x]\nargv = ["sh"]\nbackoff.maximum = 9\n',
            "FILE:3: children.x: spec.backoff.maximum: unknown key (known: initial_seconds, max_seconds,"
            " multiplier, reset_after_seconds), got 9",
        ),
        (
            '[children.x]\nargv = ["sh"]\nrestrat = "always"\n',
            "FILE:3: children.x: spec.restrat: unknown key (known: argv, backoff, cwd, env, flap_limit,"
            " inherit_env, liveness_probe, max_line_bytes, pass_env, port_holder_stop_url, port_holders, ports,"
            " readiness_probe, restart, ring_bytes, start_order, startup_probe, state_delivery, stop_grace_seconds,"
            " stop_signal),"
            " got 'always'",
        ),
        (
            "[supervisor]\nshutdown_timeout = 5\n",
            "FILE:2: supervisor: unknown key 'shutdown_timeout' (known: health_unauthenticated, listen,"
            " listen_health, listen_insecure, metrics_listen, shutdown_timeout_seconds, state_dir, tls_cert,"
            " tls_client_ca, tls_client_roles, tls_key, tokens_file)",
        ),
        ("[supervisr]\nx = 1\n", "FILE:1: unknown table or key 'supervisr' (known: [supervisor], [children.NAME])"),
        (
            '[children.x]\nargv = ["sh"]\n[children.x.env]\nPATH = "/bin"\nDEBUG = 1\n',
            "FILE:5: children.x: spec.env.DEBUG: must be a string, got 1",
        ),
        (
            '[children.x]\nargv = ["sh", 3]\n',
            "FILE:2: children.x: spec.argv[1]: must be a string, got 3",
        ),
        (
            '[children.x]\nargv = ["sh"]\n\n[children.x.backoff]\nmax_seconds = "long"\n',
            "FILE:5: children.x: spec.backoff.max_seconds: must be of type float, got 'long'",
        ),
        (
            '[children.x]\nargv = ["sh"]\n[children.x.state_delivery.http]\nurl = "http://h/load"\nurll = 1\n',
            "FILE:5: children.x: spec.state_delivery.http.urll: unknown key"
            " (known: headers, method, success_codes, timeout_seconds, unix_socket, url), got 1",
        ),
        (
            '[children.x]\nargv = ["sh"]\n[children.x.state_delivery]\nfile = { path = "rel" }\n',
            "FILE:4: children.x: spec.state_delivery.file.path: must be an absolute path to a file, got 'rel'",
        ),
        (
            '[children.x]\nargv = ["sh"]\nstop_signal = "SIGNOPE"\n',
            "FILE:3: children.x: spec.stop_signal: must be a signal name like SIGTERM or a number, got 'SIGNOPE'",
        ),
    ],
)
def test_every_level_is_checked_and_the_error_names_file_line_child_and_key(
    tmp_path: pathlib.Path, text: str, expected: str
) -> None:
    assert _error(tmp_path, text) == expected


def test_the_line_is_left_out_rather_than_guessed(tmp_path: pathlib.Path) -> None:
    # The same key text appears twice (in a multi-line string and as the key): no line is better than a wrong one.
    text = '[children.x]\nargv = ["sh", "-c", """\nbogus = 1\n"""]\n\n[children.y]\nargv = ["sh"]\nbogus = 2\n'
    assert _error(tmp_path, text).startswith("FILE:8: children.y: spec.bogus: unknown key")
    ambiguous = '[children.x]\nargv = ["sh"]\nbogus = 2\n[children.x]\n'
    assert _error(tmp_path, ambiguous).startswith("FILE: not valid TOML")


@pytest.mark.parametrize(
    ("text", "path", "line"),
    [
        ("[a]\nb = 1\n[a.c]\nd = 2\n", ("a", "c", "d"), 4),
        ("[a]\nc.d = 2\n", ("a", "c", "d"), 2),
        ('[a]\nc = { e = 1, d = 2 }\n', ("a", "c", "d"), 2),
        ('[ "a" ]\n"d" = 1 # x\n', ("a", "d"), 2),
        ('[a]\ns = """\n[b]\nd = 1\n"""\n[b]\nx = 1\n', ("b", "d"), None),
        ("[a]\nd = 1\n[b]\nd = 1\n", ("b", "d"), 4),
        ("[[a]]\nd = 1\n", ("a", "d"), None),
    ],
)
def test_key_line(text: str, path: tuple[str, ...], line: int | None) -> None:
    assert key_line(text, path) == line


def test_an_unknown_nested_key_stops_supd_with_exit_2(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "supd.toml"
    config.write_text('[children.x]\nargv = ["sleep", "100"]\n\n[children.x.backoff]\ninitail_seconds = 5\n')
    result = subprocess.run(
        [*supd_command(), "--socket", str(tmp_path / "s.sock"), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"supd: {config}:5: children.x: spec.backoff.initail_seconds: unknown key")
    assert result.stderr.count("\n") == 1


def test_a_missing_program_fails_that_child_only(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "supd.toml"
    good = ", ".join(f'"{a}"' for a in zoo("term-fast"))
    config.write_text(
        f'[children.good]\nargv = [{good}]\n\n'
        '[children.ghost]\nargv = ["/nonexistent/program"]\nrestart = "never"\n\n'
        f'[children.elsewhere]\nargv = [{good}]\ncwd = "{tmp_path}/gone"\nrestart = "never"\n'
    )
    with running_supervisor(tmp_path, ["--config", str(config)]) as handle, handle.channel() as channel:
        stub = pb_grpc.SupervisorStub(channel)
        wait_state(stub, "good", pb.CHILD_STATE_RUNNING)
        ghost = wait_state(stub, "ghost", pb.CHILD_STATE_FATAL)
        assert "/nonexistent/program" in ghost.fatal_reason
        elsewhere = wait_state(stub, "elsewhere", pb.CHILD_STATE_FATAL)
        assert elsewhere.fatal_reason
        assert handle.proc.poll() is None


def test_spawn_still_refuses_a_missing_program_naming_argv0() -> None:
    from supervisor.errors import InvalidArgument
    from supervisor.spec import spec_from_proto

    with pytest.raises(InvalidArgument, match=r"^spec.argv\[0\]: must be an executable file"):
        spec_from_proto(pb.ChildSpec(name="g", argv=["/nonexistent/program"]))
    with pytest.raises(InvalidArgument, match=r"^spec.cwd: must be an existing directory"):
        spec_from_proto(pb.ChildSpec(name="g", argv=[sys.executable], cwd="/nonexistent/dir"))


def test_every_option_of_supd_and_supctl_has_help() -> None:
    # Issue 15 item 18: --log-level had no help.
    from supervisor._daemon.settings import build_parser as supd_parser
    from supervisor.cli import build_parser

    parsers = [supd_parser(), build_parser()]
    parsers += [
        sub
        for action in parsers[1]._actions
        if isinstance(action, argparse._SubParsersAction)
        for sub in action.choices.values()
    ]
    missing = [
        f"{parser.prog} {action.option_strings}"
        for parser in parsers
        for action in parser._actions
        if action.option_strings and not action.help
    ]
    assert missing == []


def test_the_documented_example_loads(tmp_path: pathlib.Path) -> None:
    doc = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()
    example = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "supd.toml"
    config.write_text(example)
    (web,) = load_config(str(config)).children
    assert web.ring_bytes == 8388608 and web.backoff.reset_after_seconds == 60 and web.flap_limit.max_restarts == 5


@pytest.mark.parametrize("value", ['"x"', "-1", "0", "inf", "100000"])
def test_a_bad_shutdown_timeout_names_the_file_and_key(tmp_path: pathlib.Path, value: str) -> None:
    config = tmp_path / "supd.toml"
    config.write_text(f"[supervisor]\nshutdown_timeout_seconds = {value}\n")
    with pytest.raises(ConfigError, match=rf"{config}: supervisor.shutdown_timeout_seconds: must be a number > 0"):
        parse_args(["--config", str(config)])
    with pytest.raises(ConfigError, match="--shutdown-timeout: must be a number > 0"):
        parse_args(["--shutdown-timeout", "inf"])
