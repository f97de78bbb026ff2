"""How supctl turns failures into one line and an exit code.

Scripts branch on the code and people read the line, so every gRPC status and
connection failure maps here, in one place, to words a person can act on.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import cast

import grpc

from supervisor import paths
from supervisor.client.connection import Connection

__all__ = [
    "EXIT_CONFLICT",
    "EXIT_DENIED",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_START_FAILED",
    "EXIT_TIMEOUT",
    "EXIT_UNHEALTHY",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CliError",
    "quiet_grpc_core_log",
    "rpc_failure",
    "what",
]

EXIT_OK = 0
EXIT_FAILED = 1  # supd refused or failed the request
EXIT_USAGE = 2  # argparse's own code for bad usage
EXIT_UNREACHABLE = 3
EXIT_NOT_FOUND = 4
EXIT_TIMEOUT = 5
EXIT_START_FAILED = 6  # spawn: supd declared the child but its first start failed (BACKOFF or FATAL)
EXIT_CONFLICT = 7  # reload --expect-revision: another revision is the accepted one
EXIT_UNHEALTHY = 8  # health: a child asked about is not READY
EXIT_DENIED = 9  # a TCP listener refused the credentials: UNAUTHENTICATED or PERMISSION_DENIED
EXIT_INTERRUPTED = 130  # Ctrl-C during a command other than logs


class CliError(Exception):
    """A failure supctl reports as one line with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def quiet_grpc_core_log() -> None:
    """Keep gRPC core's own log lines (a failed TLS handshake, ...) off supctl's stderr, unless GRPC_VERBOSITY is set.

    gRPC core writes them to file descriptor 2 and reads GRPC_VERBOSITY once, when grpc is imported, which is
    before supctl runs. So descriptor 2 goes to /dev/null and ``sys.stderr`` to a duplicate of the original:
    the one ``supctl:`` line stays the only line, and a user debugging gRPC sets GRPC_VERBOSITY to see them.
    """
    if "GRPC_VERBOSITY" in os.environ:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = open(saved, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")  # noqa: SIM115


def what(args: argparse.Namespace) -> str:
    name = getattr(args, "name", None)
    return f"{args.command_name} {name}" if name else str(args.command_name)


# What gRPC core says when an established connection breaks (supd killed mid-call).
_CONNECTION_LOST = ("Socket closed", "Stream removed", "Connection reset", "Broken pipe")


def rpc_failure(exc: grpc.RpcError, args: argparse.Namespace, address: str, timeout: float | None) -> CliError:
    """Turn a gRPC status into the one line and exit code the user sees."""
    call = cast(grpc.Call, exc)
    code, details = call.code(), call.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in details:
        return CliError(_handshake(address, details, args) or _unreachable(address, details), EXIT_UNREACHABLE)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return CliError(f"{what(args)}: supd at {address} refused the call: {details}", EXIT_DENIED)
    if code == grpc.StatusCode.UNAVAILABLE and any(s in details for s in _CONNECTION_LOST):
        return CliError(f"{what(args)}: lost the connection to supd at {address} ({details})", EXIT_UNREACHABLE)
    if code == grpc.StatusCode.UNAVAILABLE and "Cancelling all calls" in details:  # the server is going away
        return CliError(f"{what(args)}: supd at {address} shut down before answering", EXIT_UNREACHABLE)
    if code == grpc.StatusCode.UNAVAILABLE and args.command_name == "reload" and "shutting down" not in details:
        return CliError(f"{what(args)}: {details}", EXIT_FAILED)  # supd answered: the child could not be reached
    if code == grpc.StatusCode.ABORTED:
        return CliError(f"{what(args)}: {details}", EXIT_CONFLICT)
    if code == grpc.StatusCode.UNAVAILABLE:  # supd itself said so, e.g. while shutting down
        return CliError(f"{what(args)}: supd at {address} is unavailable: {details}", EXIT_UNREACHABLE)
    if code == grpc.StatusCode.NOT_FOUND:
        name = getattr(args, "name", None)
        # supd's own words when it names something else than the child (a state revision no longer kept).
        other = details and not details.startswith("no child named")
        return CliError(details if other or not name else f"no child named {name!r}", EXIT_NOT_FOUND)
    if code == grpc.StatusCode.UNIMPLEMENTED and details == "Method not found!":  # gRPC's words: no such service
        return CliError(
            f"{what(args)}: {address} does not serve supd's API (a --listen-health port serves grpc.health.v1"
            f" alone): give supd's socket or a --listen address",
            EXIT_FAILED,
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        limit = f"after {timeout:g}s" if timeout is not None else "(see --timeout)"
        return CliError(f"{what(args)}: supd at {address} did not answer {limit}", EXIT_TIMEOUT)
    return CliError(f"{what(args)}: {details or code.name}", EXIT_FAILED)


def _handshake(address: str, details: str, args: argparse.Namespace) -> str | None:
    """Name the certificate and what is wrong with it when a TLS handshake failed; None when it was not TLS."""
    if paths.socket_path_of(address) is not None:
        return None
    conn = Connection.from_env(
        address=address, insecure=getattr(args, "insecure", None), cert_file=getattr(args, "cert_file", None),
        ca_file=getattr(args, "ca_file", None), server_name=getattr(args, "server_name", None),
    )
    roots = f"the CA in --ca-file {conn.ca_file}" if conn.ca_file else "the system's roots (give --ca-file)"
    if "CERTIFICATE_VERIFY_FAILED" in details or "certificate verify failed" in details.lower():
        reason = details.rpartition("CERTIFICATE_VERIFY_FAILED: ")[2].partition(":")[0] or "verification failed"
        return f"supd's certificate at {address} is not trusted by {roots} ({reason})"
    if "Hostname Verification" in details or "No match found for server name" in details:
        name = conn.server_name or address.rpartition(":")[0]
        return f"supd's certificate at {address} does not name {name!r}: dial a name it holds or set --server-name"
    if "WRONG_VERSION_NUMBER" in details:
        return f"supd at {address} does not speak TLS there (a --listen-insecure listener?): add --insecure"
    if "Socket closed" not in details:
        return None
    if conn.insecure:
        return f"supd at {address} closed the plaintext connection: the listener may need TLS (drop --insecure)"
    if conn.cert_file:
        return (
            f"supd at {address} closed the connection during the TLS handshake: it may not accept the client"
            f" certificate {conn.cert_file} (not signed by its --tls-client-ca?)"
        )
    return (
        f"supd at {address} closed the connection during the TLS handshake: it may require a client"
        " certificate (give --cert-file and --key-file)"
    )


def _unreachable(address: str, details: str) -> str:
    """Say why nothing answered in words a person can act on."""
    socket_path = paths.socket_path_of(address)
    lowered = details.lower()
    if "permission denied" in lowered:
        return f"cannot connect to supd at {address} (permission denied)"
    if socket_path is not None and not os.path.exists(socket_path):
        return f"no supd is running at {address} (no such socket)"
    if "refused" in lowered:
        return f"no supd is running at {address} (connection refused)"
    reason = details.rpartition(": ")[2] or details
    return f"cannot reach supd at {address} ({reason})"
