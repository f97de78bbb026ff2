"""The sidecar image: its size, and the time from `podman run` to supd answering on its socket.

    python bench/container.py --base localhost/debian-python:bookworm --runs 10

Builds the image from Containerfile (layers cached), then per run starts a container with the socket directory
mounted from the host, as tests/test_container.py does, and measures from just before `podman run -d` to the
first grpc.health.v1 Check answered SERVING through the mounted socket. The baseline of the same run is the
same container start with the base image and a python3 that binds a Unix socket at the same place: the cost of
podman and of starting a Python interpreter, without supd. Printed: the image's size beside the base's, and
median / worst start-to-ready times of both. Needs root and podman (see .ci/run).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from supervisor.testing import wait_until

ROOT = pathlib.Path(__file__).resolve().parent.parent
SUPD_UID = 10001  # the Containerfile's SUPD_UID
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
BASELINE = "import os, socket\ns = socket.socket(socket.AF_UNIX)\nos.mkdir('/run/supd/sock')\ns.bind('{}')\n" \
    "s.listen()\nwhile True: s.accept()[0].close()"  # fmt: skip


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=True, timeout=900).stdout


def image_bytes(image: str) -> int:
    return int(json.loads(podman("image", "inspect", image))[0]["Size"])


def serving(path: pathlib.Path) -> bool:
    if not path.exists():
        return False
    with grpc.insecure_channel(f"unix://{path}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:  # bound but not yet listening: refused
                raise
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def accepting(path: pathlib.Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as client:
        try:
            client.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
    return True


def one_start(image: str, argv: list[str], ready: Callable[[pathlib.Path], bool]) -> float:
    with tempfile.TemporaryDirectory(prefix="supd-bench-") as tmp:
        run_dir = pathlib.Path(tmp) / "run"
        run_dir.mkdir(mode=0o700)
        os.chown(run_dir, SUPD_UID, SUPD_UID)
        path = run_dir / "sock" / "supd.sock"
        started = time.monotonic()
        name = podman("run", "-d", "--network", "none", "--health-interval", "disable", "--user", str(SUPD_UID),
                      "-v", f"{run_dir}:/run/supd", *argv[:1], image, *argv[1:]).strip()  # fmt: skip
        try:
            wait_until(lambda: ready(path), timeout=60, interval=0.002, what="the socket")
            return time.monotonic() - started
        finally:
            podman("rm", "-f", "-t", "0", name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default=os.environ.get("SUPD_CONTAINER_BASE"), help="BASE build argument")
    parser.add_argument("--image", default="localhost/supd:bench")
    parser.add_argument("--runs", type=int, default=10)
    opts = parser.parse_args()
    build = ["build", "--format", "docker", "-f", str(ROOT / "Containerfile"), "-t", opts.image]
    if os.path.exists(CA_BUNDLE):
        build += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    if opts.base:
        build += ["--build-arg", f"BASE={opts.base}"]
    podman(*build, str(ROOT))
    base_image = opts.base or "python:3.11-slim-bookworm"
    size, base_size = image_bytes(opts.image), image_bytes(base_image)
    print(f"image {opts.image}: {size / 1e6:.1f} MB; base {base_image}: {base_size / 1e6:.1f} MB;"
          f" supd's layers: {(size - base_size) / 1e6:.1f} MB")  # fmt: skip
    supd, bare = [], []
    for _ in range(opts.runs):  # interleaved, so that both see the same load
        supd.append(one_start(opts.image, [], serving))
        code = BASELINE.format("/run/supd/sock/supd.sock")
        bare.append(one_start(base_image, ["--entrypoint=python3", "-c", code], accepting))
    for label, times in (("supd image, run -> grpc.health SERVING", supd), ("base + python3, run -> accepting", bare)):
        print(f"{label}: median {statistics.median(times) * 1000:.0f} ms, worst {max(times) * 1000:.0f} ms"
              f" ({len(times)} runs)")  # fmt: skip
    print(f"supd's share of the start: {(statistics.median(supd) - statistics.median(bare)) * 1000:.0f} ms (medians)")


if __name__ == "__main__":
    main()
