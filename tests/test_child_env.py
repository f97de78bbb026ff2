"""A child's environment is what its spec says: never supd's telemetry settings or credentials by accident.

Guards: a child spawned with an empty environment inherited supd's whole environment, the OTLP headers token and
cloud credentials included, and exec state deliveries ran with supd's environment whatever the child's was.
"""

from __future__ import annotations

import pathlib

import pytest

from supervisor.environment import child_environment, withheld
from supervisor.spec import ChildSpec, spec_from_mapping
from supervisor.testing import running_supervisor, wait_until
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

SECRETS = {
    "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer otlp-secret",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "GITHUB_TOKEN": "gh-secret",
    "SUPD_EXTRA": "supd-own",
}
SUPD_ENV = {**SECRETS, "PLAIN_SETTING": "plain", "LANG": "C.UTF-8", "TZ": "UTC"}
# Writes its environment, NUL-separated, to the file named by its first argument (a child then stays up).
DUMP = ["/bin/sh", "-c", 'env -0 > "$0"']
CHILD = ["/bin/sh", "-c", 'env -0 > "$0"; exec sleep 100']


def read_env(path: pathlib.Path) -> dict[str, str]:
    entries = [e for e in path.read_bytes().decode().split("\0") if e]
    return dict(e.split("=", 1) for e in entries)


# --- the rule ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["OTEL_EXPORTER_OTLP_HEADERS", "SUPD_ADDR", "AWS_ACCESS_KEY_ID", "AZURE_CLIENT_SECRET",
     "GOOGLE_APPLICATION_CREDENTIALS", "GITHUB_TOKEN", "DB_PASSWORD", "STRIPE_SECRET", "my_api_key",
     "DOCKER_CREDENTIALS"],
)
def test_supd_own_and_credential_variables_are_withheld(name: str) -> None:
    assert withheld(name)


@pytest.mark.parametrize(
    "name", ["PATH", "HOME", "LANG", "KEYBOARD", "TOKENIZER", "PASSWORDLESS", "GOOGLE_CLOUD_PROJECT"]
)
def test_ordinary_variables_are_not_withheld(name: str) -> None:
    assert not withheld(name)


def test_the_default_is_a_minimal_base_then_pass_env_then_the_spec() -> None:
    supd = {"PATH": "/bin", "HOME": "/root", "LANG": "C", "FOO": "x", **SECRETS}
    assert child_environment({"A": "1"}, source=supd) == {"PATH": "/bin", "HOME": "/root", "LANG": "C", "A": "1"}
    assert child_environment({"PATH": "/opt"}, pass_env=["FOO", "GITHUB_TOKEN", "UNSET"], source=supd) == {
        "PATH": "/opt", "HOME": "/root", "LANG": "C", "FOO": "x", "GITHUB_TOKEN": "gh-secret",
    }


def test_inherit_env_passes_everything_but_what_is_withheld_unless_named() -> None:
    supd = {"PATH": "/bin", "FOO": "x", **SECRETS}
    assert child_environment({}, inherit=True, source=supd) == {"PATH": "/bin", "FOO": "x"}
    named = child_environment({}, inherit=True, pass_env=["AWS_SECRET_ACCESS_KEY"], source=supd)
    assert named == {"PATH": "/bin", "FOO": "x", "AWS_SECRET_ACCESS_KEY": "aws-secret"}


def test_pass_env_comes_from_toml_and_its_names_are_checked() -> None:
    spec = spec_from_mapping("web", {"argv": ["true"], "pass_env": ["AWS_REGION"], "inherit_env": True})
    assert (spec.pass_env, spec.inherit_env) == (("AWS_REGION",), True)
    with pytest.raises(Exception, match=r"pass_env\[1\]: names must be non-empty without '=' or NUL"):
        ChildSpec("web", ("true",), pass_env=("A", "B=C")).validate()
    with pytest.raises(Exception, match=r"pass_env\[0\]: must be a string"):
        spec_from_mapping("web", {"argv": ["true"], "pass_env": [3]})


# --- real children, probes and deliveries --------------------------------------------------------------------------


def test_children_probes_and_deliveries_get_only_what_their_spec_says(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "env"
    out.mkdir()
    cases = {
        "plain": pb.ChildSpec(env={"OWN": "1"}),
        "plain-named": pb.ChildSpec(pass_env=["OTEL_EXPORTER_OTLP_HEADERS"]),
        "inherit": pb.ChildSpec(
            inherit_env=True,
            readiness_probe=pb.Probe(exec=pb.ExecAction(argv=[*DUMP, str(out / "probe")]), period_seconds=0.2),
            state_delivery=pb.StateDelivery(exec=pb.ExecDelivery(argv=[*DUMP, str(out / "delivery")])),
        ),
        "inherit-named": pb.ChildSpec(inherit_env=True, pass_env=["AWS_SECRET_ACCESS_KEY"]),
    }
    with running_supervisor(tmp_path, env=SUPD_ENV) as sup, sup.channel() as channel:
        stub = pb_grpc.SupervisorStub(channel)
        for name, spec in cases.items():
            spec.name = name
            spec.argv[:] = [*CHILD, str(out / name)]
            spec.restart = pb.RESTART_POLICY_NEVER
            stub.Spawn(pb.SpawnRequest(spec=spec), timeout=10)
        stub.Reload(pb.ReloadRequest(name="inherit", state=b"{}"), timeout=10)
        for name in [*cases, "probe", "delivery"]:
            wait_until(lambda n=name: (out / n).exists() and (out / n).stat().st_size, 10, what=f"{name}'s env")
    got = {name: read_env(out / name) for name in [*cases, "probe", "delivery"]}
    for name, env in got.items():
        named = {"plain-named": "OTEL_EXPORTER_OTLP_HEADERS", "inherit-named": "AWS_SECRET_ACCESS_KEY"}.get(name)
        assert {k for k in SECRETS if k in env} == ({named} if named else set()), (name, env)
        assert env["LANG"] == "C.UTF-8" and env["TZ"] == "UTC" and "PATH" in env, (name, env)
        assert ("PLAIN_SETTING" in env) == name.startswith(("inherit", "probe", "delivery")), (name, env)
    for name in cases:
        assert got[name]["SUPD_CHILD"] == name and len(got[name]["SUPD_INSTANCE"]) == 32
    assert got["plain"]["OWN"] == "1"
    assert got["plain-named"]["OTEL_EXPORTER_OTLP_HEADERS"] == SECRETS["OTEL_EXPORTER_OTLP_HEADERS"]
    assert got["inherit-named"]["AWS_SECRET_ACCESS_KEY"] == "aws-secret"
    assert got["delivery"]["SUPD_CHILD"] == "inherit" and got["delivery"]["SUPD_STATE_REVISION"] == "1"
