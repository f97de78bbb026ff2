"""examples/k8s checked offline: the Kubernetes 1.29 schemas (strict), then what the schemas cannot say.

kubernetes-validate checks structure and types, not enum values nor cross-references, so this file asserts
the rest: supd is a native sidecar, the probes reach its grpc.health.v1 listener and target a child its config
declares, the grace period covers supd's shutdown deadline, the volumes and uid match the Containerfile, and
supd's own parsers accept the config file and the OTEL_* variables given to it.
"""

from __future__ import annotations

import copy
import pathlib
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from supervisor._daemon.config_file import load_config
from supervisor._daemon.settings import build_parser
from supervisor._daemon.telemetry.settings import TelemetrySettings

ROOT = pathlib.Path(__file__).resolve().parent.parent
K8S = ROOT / "examples" / "k8s"
KUBERNETES = "1.29.0"  # the first release with native sidecars on by default
MANIFESTS = sorted(K8S.glob("*.yaml"))


def load(path: pathlib.Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), path
    return document


def containerfile(name: str) -> str:
    """The value an ``ARG``/``ENV`` line of the Containerfile gives ``name``."""
    match = re.search(rf"^\s*(?:ARG\s+|ENV\s+)?{name}=(\S+?)(?:\s+\\)?$", (ROOT / "Containerfile").read_text(), re.M)
    assert match, f"{name} not in Containerfile"
    return match.group(1)


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for path in MANIFESTS:
        document = load(path)
        if document["kind"] == "Pod":
            specs.append((path.name, document["spec"]))
        elif document["kind"] == "Deployment":
            specs.append((path.name, document["spec"]["template"]["spec"]))
    return specs


def supd_container(spec: dict[str, Any]) -> dict[str, Any]:
    (supd,) = [c for c in spec.get("initContainers", []) if c["name"] == "supd"]
    return supd


def supd_args(container: dict[str, Any]) -> dict[str, str]:
    """``--flag=value`` arguments by flag."""
    return dict(arg.split("=", 1) for arg in container["args"])


def test_there_are_a_pod_and_a_deployment() -> None:
    assert sorted(name for name, _ in pod_specs()) == ["deployment.yaml", "pod.yaml"]


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_manifest_is_valid_kubernetes(path: pathlib.Path) -> None:
    kubernetes_validate.validate(load(path), KUBERNETES, strict=True)


def test_strict_validation_catches_a_misspelled_field() -> None:
    """The schema check is live: one misspelled key in the pod is refused."""
    pod = load(K8S / "pod.yaml")
    broken = copy.deepcopy(pod)
    supd_container(broken["spec"])["restartPolicyy"] = supd_container(broken["spec"]).pop("restartPolicy")
    with pytest.raises(kubernetes_validate.ValidationError, match="restartPolicyy"):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_deployment_runs_the_pod_of_pod_yaml() -> None:
    specs = dict(pod_specs())
    assert specs["deployment.yaml"] == specs["pod.yaml"]


@pytest.mark.parametrize(("name", "spec"), pod_specs(), ids=[name for name, _ in pod_specs()])
def test_supd_is_a_native_sidecar_with_grpc_probes_on_its_children(
    name: str, spec: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    supd = supd_container(spec)
    assert supd["restartPolicy"] == "Always"  # an init container that keeps running: a native sidecar
    args = supd_args(supd)
    health_port = int(args["--listen-health"].rsplit(":", 1)[1])
    assert {"name": "grpc-health", "containerPort": health_port} in supd["ports"]
    config = load(K8S / "configmap.yaml")
    config_file = pathlib.Path(args["--config"])
    (mount,) = [m for m in supd["volumeMounts"] if m["mountPath"] == str(config_file.parent)]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == config["metadata"]["name"]
    for probe in ("startupProbe", "livenessProbe"):
        assert supd[probe]["grpc"] == {"port": health_port, "service": ""}  # supd itself
    readiness = supd["readinessProbe"]["grpc"]
    assert readiness["port"] == health_port
    # a child that supd's own parser reads from the ConfigMap's config file
    config_copy = tmp_path / config_file.name
    config_copy.write_text(config["data"][config_file.name])
    assert readiness["service"] in {child.name for child in load_config(str(config_copy)).children}


@pytest.mark.parametrize(("name", "spec"), pod_specs(), ids=[name for name, _ in pod_specs()])
def test_grace_period_covers_supds_shutdown(name: str, spec: dict[str, Any]) -> None:
    supd = supd_container(spec)
    parsed = build_parser().parse_args(supd["args"])  # every flag the manifests give is one supd knows
    # The app stops first, then supd within its --shutdown-timeout; the kubelet SIGKILLs at the grace's end:
    # the grace must hold supd's whole deadline with room for the app's stop before it.
    assert parsed.shutdown_timeout is not None
    assert spec["terminationGracePeriodSeconds"] >= parsed.shutdown_timeout + 5


@pytest.mark.parametrize(("name", "spec"), pod_specs(), ids=[name for name, _ in pod_specs()])
def test_socket_state_and_uid_match_the_image(name: str, spec: dict[str, Any]) -> None:
    supd = supd_container(spec)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in supd["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/run/supd"]]
    assert mounts["/var/lib/supd"] in volumes
    assert containerfile("SUPD_STATE_DIR") == "/var/lib/supd"
    socket = containerfile("SUPD_ADDR")
    assert socket.startswith("unix:///run/supd/")
    # The socket directory is supd's own (0700): the app reaches it through the same volume, as the same uid.
    assert spec["securityContext"]["runAsUser"] == int(containerfile("SUPD_UID"))
    for app in spec["containers"]:
        assert {"name": mounts["/run/supd"], "mountPath": "/run/supd"} in app["volumeMounts"]
        assert {"name": "SUPD_ADDR", "value": socket} in app["env"]


@pytest.mark.parametrize(("name", "spec"), pod_specs(), ids=[name for name, _ in pod_specs()])
def test_otel_variables_are_accepted_by_supd(name: str, spec: dict[str, Any]) -> None:
    env = {e["name"]: e.get("value", "x") for e in supd_container(spec)["env"]}
    expanded = {k: re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], v) for k, v in env.items()}
    telemetry = TelemetrySettings.from_env(expanded)
    assert telemetry.logs is not None, telemetry.disabled_reason  # every child's lines go to the Collector
    assert telemetry.resource["k8s.pod.name"] == "x"
