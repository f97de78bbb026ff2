"""Spawn a child, follow its output to its exit, and print how it ended (blocking client).

Run against a supd: ``SUPD_ADDR=unix:///path/supd.sock python spawn_and_follow.py``.
"""

from __future__ import annotations

from supervisor.client import Client, Line
from supervisor.v1 import supervisor_pb2 as pb

with Client() as supd:  # SUPD_ADDR, else the default socket
    supd.spawn(name="greeter", argv=["sh", "-c", "echo hello; echo oops >&2; exit 3"], restart="never", replace=True)
    for item in supd.follow("greeter", from_seq=0):
        if isinstance(item, Line):
            print(f"{item.stream}: {item.text}")
        elif isinstance(item, pb.Event) and item.kind == pb.Event.KIND_EXITED:
            print(f"exited: {item.exit.description}")
            break
    supd.remove("greeter")
