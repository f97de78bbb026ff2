"""The real Caddy 2.6 as a test peer: where it is, the example config made runnable anywhere, and what it serves.

``example(dest, admin, http)`` copies ``examples/caddy/`` into ``dest`` with its
two ports, its paths and its Caddy binary replaced, and nothing else changed,
so the tests run the example a user runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import tomllib
import urllib.error
import urllib.request
from typing import Any

import pytest

CADDY = shutil.which("caddy")
# Skipped on a developer machine without caddy; in CI (which installs it) a missing caddy fails.
skip_without_caddy = pytest.mark.skipif(CADDY is None and not os.environ.get("CI"), reason="caddy is not installed")

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "caddy"
# The example's admin and routes ports, as written in its three files.
EXAMPLE_ADMIN, EXAMPLE_HTTP = 2019, 8080

# Direct connections only: a proxy from the environment must not answer for Caddy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Example:
    """``examples/caddy/`` copied into one directory, on its own ports."""

    def __init__(self, dest: pathlib.Path, admin: int, http: int) -> None:
        assert CADDY, "caddy is missing: .ci/run installs it with apt-get"
        self.dir, self.admin, self.http = dest, admin, http
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("supd.toml", "caddy.json", "routes.json"):
            text = (EXAMPLE / name).read_text()
            for old, new in ((EXAMPLE_ADMIN, admin), (EXAMPLE_HTTP, http)):
                text, n = re.subn(rf"\b{old}\b", str(new), text)
                assert n or name == "caddy.json", f"examples/caddy/{name} no longer uses port {old}"
            text = text.replace("/tmp/supd-caddy", str(dest)).replace("examples/caddy/", f"{dest}/")
            if name == "supd.toml":
                text, n = re.subn(r'argv = \["caddy"', f'argv = ["{CADDY}"', text)
                assert n == 1, "examples/caddy/supd.toml no longer runs caddy"
            (dest / name).write_text(text)
        self.config = dest / "supd.toml"
        self.caddy_json = dest / "caddy.json"
        self.spec: dict[str, Any] = tomllib.loads(self.config.read_text())["children"]["caddy"]

    def routes(self, **bodies: str) -> bytes:
        """routes.json as is, or with the body of static route /NAME replaced where asked (``hello="..."``)."""
        text = (self.dir / "routes.json").read_text()
        if not bodies:
            return text.encode()
        config = json.loads(text)
        for route in config["apps"]["http"]["servers"]["example"]["routes"]:
            path = route["match"][0]["path"][0].lstrip("/")
            if path in bodies:
                route["handle"][0]["body"] = bodies.pop(path)
        assert not bodies, f"routes.json has no static route for {sorted(bodies)}"
        return json.dumps(config).encode()

    def pids(self) -> list[int]:
        """Every process running Caddy with this copy's caddy.json (a path unique to the test)."""
        return caddy_pids(self.caddy_json)

    def kill_all(self) -> None:
        """SIGKILL every Caddy of this copy that is left (one that outlived a supd which died)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def fetch(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of a GET to 127.0.0.1:port; (0, b"") when nothing answers."""
    try:
        with _OPENER.open(f"http://127.0.0.1:{port}{path}", timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def caddy_pids(config: pathlib.Path) -> list[int]:
    """Pids of the live (not zombie) processes whose argv names ``config``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue  # ended meanwhile
            if str(config).encode() in argv:
                pids.append(int(entry))
    return pids
