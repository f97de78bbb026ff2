"""What every supctl command gets: the stub, the address and the deadline asked for."""

from __future__ import annotations

import dataclasses

from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

__all__ = ["QUICK_TIMEOUT", "RELOAD_TIMEOUT", "SHUTDOWN_SLACK_SECONDS", "STOPPING_TIMEOUT", "Client"]

# Quick calls get a short deadline; calls that may wait out a child's stop grace
# (at most 3600 s by the contract) get that plus a margin; logs gets none.
QUICK_TIMEOUT = 30.0
STOPPING_TIMEOUT = 3660.0
# How long past its announced deadline `shutdown` waits for supd to be gone.
SHUTDOWN_SLACK_SECONDS = 5.0
# A Reload may retry for its delivery's budget (30 s by default) and more when a child declares a longer one.
RELOAD_TIMEOUT = 120.0


@dataclasses.dataclass(frozen=True)
class Client:
    """What every command needs: the stub, the address it dials and the deadline asked for."""

    stub: pb_grpc.SupervisorStub
    address: str
    timeout: float | None  # None: the command's own default

    def deadline(self, default: float | None) -> float | None:
        return self.timeout if self.timeout is not None else default
