"""What a Stream reader that stopped reading costs supd, in resident memory: the figure behind --max-streams.

    python bench/stalled_readers.py --readers 40

A child floods its stdout into a 64 MiB ring; once the ring is full, N readers each on a connection of its own
follow the stream, read one message and then never again. Printed: supd's RSS before and 5 s after, and the
difference per reader. The ring is the buffer (a slow reader gets a Gap), so what a stalled reader holds at supd
is what gRPC has queued for it, bounded by the flow-control window.
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

import grpc

from supervisor.testing import running_supervisor, wait_until
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

LINE = "0123456789" * 7


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readers", type=int, default=40)
    args = parser.parse_args()
    n = args.readers
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="supd-stalled-"))
    limits = ["--max-streams", str(n + 1), "--max-streams-per-connection", str(n + 1)]
    with running_supervisor(tmp, limits) as sup:
        stub = sup.stub()
        spec = pb.ChildSpec(name="flood", argv=["/bin/sh", "-c", f"yes {LINE}"], ring_bytes=64 << 20)
        stub.Spawn(pb.SpawnRequest(spec=spec), timeout=30)
        full = lambda: stub.Health(pb.HealthRequest(name="flood")).children[0].ring_bytes_used > 60 << 20  # noqa: E731
        wait_until(full, timeout=60, what="the ring to fill")
        before = rss_mib(sup.proc.pid)
        own = [("grpc.use_local_subchannel_pool", 1)]  # a connection each
        channels = [grpc.insecure_channel(sup.address, options=own) for _ in range(n)]
        calls = [pb_grpc.SupervisorStub(c).Stream(pb.StreamRequest(name="flood", follow=True)) for c in channels]
        for call in calls:
            next(call)  # one message, then never again
        time.sleep(5)  # the readers stay stalled while supd goes on draining the child
        after = rss_mib(sup.proc.pid)
        print(f"{n} stalled readers: supd RSS {before:.0f} MiB -> {after:.0f} MiB, {(after - before) / n:.2f} MiB each")
        for call in calls:
            call.cancel()
        for channel in channels:
            channel.close()


if __name__ == "__main__":
    main()
