"""Spawn a child with a readiness probe and a file-delivered state, wait until it is ready, reload it (asyncio).

The child becomes ready once it has read a state; supd writes the state file on
Reload and replays the accepted revision after every restart.
Run against a supd: ``SUPD_ADDR=unix:///path/supd.sock python ready_and_reload.py``.
"""

from __future__ import annotations

import asyncio
import pathlib
import tempfile

from supervisor.client import AsyncClient
from supervisor.errors import DeadlineExceeded
from supervisor.v1 import supervisor_pb2 as pb


async def main(workdir: pathlib.Path) -> None:
    state, ready = workdir / "state.json", workdir / "ready"
    script = f"while [ ! -s {state} ]; do sleep 0.05; done; touch {ready}; exec sleep 1000"
    async with AsyncClient() as supd:
        await supd.spawn(
            name="configured",
            argv=["sh", "-c", script],
            state_delivery=pb.StateDelivery(file=pb.FileDelivery(path=str(state))),
            readiness_probe=pb.Probe(exec=pb.ExecAction(argv=["test", "-e", str(ready)]), period_seconds=0.1),
            replace=True,
        )
        try:
            await supd.wait_ready("configured", timeout=0.5)
        except DeadlineExceeded as exc:
            print(f"not ready yet: {exc.message.split(' (')[0]}")
        reply = await supd.reload("configured", '{"port": 8080}', content_type="application/json")
        print(f"state revision {reply.revision} accepted")
        child = await supd.wait_ready("configured", timeout=30)
        print(f"configured is {pb.ChildHealth.Name(child.health)}")
        await supd.remove("configured")


with tempfile.TemporaryDirectory() as tmp:
    asyncio.run(main(pathlib.Path(tmp)))
