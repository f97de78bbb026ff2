"""Who holds a port: listening sockets found through the kernel, mapped to processes by socket inode.

A port is held by a socket, and a socket by every process that has a file
descriptor on it (a listener inherited through ``fork`` or shared with
``SO_REUSEPORT`` has several holders). Names are never used: a holder is a pid,
its kernel start time and the socket inode that was seen in its fd table.

Two steps:

1. The sockets. A ``NETLINK_SOCK_DIAG`` dump (``inet_diag_req_v2``, see
   linux/inet_diag.h and linux/sock_diag.h) lists TCP sockets in LISTEN and
   every UDP socket, for IPv4 and IPv6, with local port and inode. Where
   netlink is refused (a seccomp filter, a kernel without ``inet_diag``), the
   same facts come from /proc/net/{tcp,tcp6,udp,udp6}, which costs far more:
   the kernel formats its whole table as text.
2. The processes. One pass over /proc/*/fd maps inodes to pids; each
   candidate is then re-read through a directory fd on /proc/PID, which stays
   bound to that process: if it exits (and its pid is reused) every read
   through it fails with ESRCH, so the start time, uid, command line and
   environment read after the socket is confirmed belong to the process that
   holds it.

Limits, all visible to the caller through ``find_holders_report``:

- Only supd's network namespace is seen, and only processes in supd's pid
  namespace can be named. A socket of a process outside it (another container
  of the same pod sharing the network namespace) has no holder.
- Reading another user's /proc/PID/fd needs root (CAP_SYS_PTRACE); as an
  ordinary user, another user's holder is invisible.
- Sockets the kernel itself opened (nfsd, for example) are in no fd table.
- A socket closed between the dump and the /proc scan also has no holder.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import struct
import sys
from collections.abc import Iterable, Sequence

import structlog

from .sessions import read_stat

__all__ = [
    "CMDLINE_MAX",
    "Holder",
    "PortSpec",
    "Socket",
    "find_holders",
    "find_holders_report",
    "find_sockets",
    "pin_holder",
    "port_is_free",
]

log = structlog.get_logger("supd.ports")

CMDLINE_MAX = 300
"""Longest ``Holder.cmdline``, in characters."""

_PROTOCOLS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_PROC_NET: dict[tuple[int, str], str] = {
    (socket.AF_INET, "tcp"): "/proc/net/tcp",
    (socket.AF_INET6, "tcp"): "/proc/net/tcp6",
    (socket.AF_INET, "udp"): "/proc/net/udp",
    (socket.AF_INET6, "udp"): "/proc/net/udp6",
}
_TCP_LISTEN = 10  # include/net/tcp_states.h
_ALL_STATES = 0xFFFFFFFF


@dataclasses.dataclass(frozen=True, slots=True)
class PortSpec:
    """A port a child listens on: ``port`` 1..65535, ``protocol`` "tcp" or "udp". ValueError names a bad field."""

    port: int
    protocol: str = "tcp"

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port: must be 1..65535, got {self.port}")
        if self.protocol not in _PROTOCOLS:
            raise ValueError(f"protocol: must be 'tcp' or 'udp', got {self.protocol!r}")

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}"


@dataclasses.dataclass(frozen=True, slots=True)
class Socket:
    """A socket that holds ``port``: TCP in LISTEN, or UDP in any state (bound, or bound and connected).

    ``family`` is AF_INET or AF_INET6, ``address`` the local address ("0.0.0.0",
    "::", "127.0.0.1"...), ``uid`` the socket's owner as the kernel records it
    (the creator's uid, known even when the holder is not), ``inode`` its inode
    number (0 when no file refers to it).
    """

    port: PortSpec
    family: int
    address: str
    uid: int
    inode: int


@dataclasses.dataclass(frozen=True, slots=True)
class Holder:
    """A process holding a listening socket (tcp LISTEN, or a bound udp socket) on a port.

    ``start_ticks`` is field 22 of /proc/PID/stat (clock ticks since boot), so
    (pid, start_ticks) names this process and not a later one with the same pid
    (except one started within the same 10 ms tick: open a pidfd and compare
    again before signalling).
    ``uid`` is the real uid (first field of ``Uid:`` in /proc/PID/status).
    ``cmdline`` is argv joined by spaces, at most ``CMDLINE_MAX`` characters,
    "[comm]" when argv is empty (kernel threads). ``marker`` holds those of
    the requested environment variables that are set in /proc/PID/environ (the
    environment the process was started with: later ``putenv`` calls do not
    show), {} when that file is unreadable. One holder per (process, port),
    whether it holds the port on IPv4, IPv6 or both.
    """

    pid: int
    start_ticks: int
    uid: int
    cmdline: str
    port: PortSpec
    marker: dict[str, str]


def find_holders(ports: Sequence[PortSpec], markers: Sequence[str] = ()) -> list[Holder]:
    """Every process holding one of ``ports`` in supd's network namespace, IPv4 and IPv6 (any local address).

    Sorted by port, protocol, pid. A socket shared by several processes (fork,
    SO_REUSEPORT) gives several holders; supd itself is included if it holds
    one. Sockets without a visible process are left out: see
    ``find_holders_report``. Blocking (a few ms per 300 processes as root):
    run it in a worker thread. Raises OSError only when the sockets cannot be
    listed by either source, or /proc cannot be listed.
    """
    return find_holders_report(ports, markers)[0]


def find_holders_report(ports: Sequence[PortSpec], markers: Sequence[str] = ()) -> tuple[list[Holder], list[PortSpec]]:
    """``find_holders`` plus the ports that have a socket no visible process holds.

    A port is in the second list when at least one of its sockets was not found
    in any fd table this process may read: a holder of another user while supd
    is not root, a process in another pid namespace sharing the network
    namespace, a kernel socket, or a socket closed during the scan (then
    ``port_is_free`` says so). Such a holder cannot be identified, so it must
    not be treated as absent. Raises OSError like ``find_holders``.
    """
    sockets = find_sockets(ports)
    if not sockets:
        return [], []
    by_inode: dict[int, list[Socket]] = {}
    for sock in sockets:
        if sock.inode:
            by_inode.setdefault(sock.inode, []).append(sock)
    holders: list[Holder] = []
    seen_inodes: set[int] = set()
    for pid, fds in _scan_fds(frozenset(by_inode)).items():
        found = _identify(pid, fds, by_inode, markers)
        for holder, inodes in found:
            holders.append(holder)
            seen_inodes.update(inodes)
    unattributed = sorted(
        {sock.port for sock in sockets if sock.inode not in seen_inodes}, key=lambda p: (p.port, p.protocol)
    )
    holders.sort(key=lambda h: (h.port.port, h.port.protocol, h.pid))
    return holders, unattributed


def pin_holder(holder: Holder) -> int | None:
    """A pidfd on ``holder`` if it still runs with its start time; None when it has ended (zombie too) or changed.

    Signal through the pidfd (``signal.pidfd_send_signal``): it can never hit a
    later process that reuses the pid. The caller closes it.
    """
    try:
        fd = os.pidfd_open(holder.pid)
    except ProcessLookupError:
        return None
    now = read_stat(holder.pid)  # read after the pidfd is open: a match means the pidfd is that process
    if now is None or now.zombie or now.start_ticks != holder.start_ticks:
        os.close(fd)
        return None
    return fd


def port_is_free(port: PortSpec) -> bool:
    """No socket listens on (tcp) / is bound to (udp) ``port``, any local address, IPv4 or IPv6.

    One netlink dump per address family; no /proc/*/fd scan (well under a
    millisecond). Raises OSError like ``find_sockets``.
    """
    return not find_sockets([port])


def find_sockets(ports: Sequence[PortSpec]) -> list[Socket]:
    """The sockets holding any of ``ports``: TCP in LISTEN, UDP in any state, IPv4 and IPv6.

    Source: a NETLINK_SOCK_DIAG dump per (family, protocol) asked for; where it
    is refused, /proc/net/{tcp,tcp6,udp,udp6} (logged at debug level as
    ``ports.netlink.refused``). A missing /proc/net/tcp6 or udp6 means a kernel
    without IPv6: no sockets there. Raises OSError when both sources fail.
    """
    wanted = {(p.port, p.protocol): p for p in ports}
    found: list[Socket] = []
    for protocol in sorted({p.protocol for p in ports}):
        numbers = frozenset(port for port, proto in wanted if proto == protocol)
        for family in _FAMILIES:
            for port, address, uid, inode in _list_family(family, protocol, numbers):
                found.append(Socket(wanted[port, protocol], family, address, uid, inode))
    return found


def _list_family(family: int, protocol: str, ports: frozenset[int]) -> list[tuple[int, str, int, int]]:
    """(local port, local address, uid, inode) of each socket of one family and protocol holding one of ``ports``."""
    try:
        return _netlink_sockets(family, protocol, ports)
    except OSError as exc:
        log.debug(
            "ports.netlink.refused",
            family=socket.AddressFamily(family).name,
            protocol=protocol,
            error=str(exc),
            fallback=_PROC_NET[family, protocol],
        )
    return _procnet_sockets(family, protocol, ports)


# --- NETLINK_SOCK_DIAG ------------------------------------------------------------------------------------------

_NETLINK_SOCK_DIAG = 4  # linux/netlink.h
_SOCK_DIAG_BY_FAMILY = 20  # linux/sock_diag.h
_NLM_F_REQUEST = 0x1  # linux/netlink.h
_NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
# struct nlmsghdr (linux/netlink.h): __u32 nlmsg_len, __u16 nlmsg_type, __u16 nlmsg_flags, __u32 nlmsg_seq,
# __u32 nlmsg_pid. 16 bytes.
_NLMSGHDR = struct.Struct("=IHHII")
# struct inet_diag_req_v2 (linux/inet_diag.h): __u8 sdiag_family, __u8 sdiag_protocol, __u8 idiag_ext, __u8 pad,
# __u32 idiag_states, struct inet_diag_sockid id (48 bytes, zero: a dump ignores it). 56 bytes.
_REQ_V2 = struct.Struct("=BBBxI48x")
# struct inet_diag_msg (linux/inet_diag.h), 72 bytes: __u8 idiag_family, idiag_state, idiag_timer, idiag_retrans;
# struct inet_diag_sockid { __be16 idiag_sport, idiag_dport; __be32 idiag_src[4], idiag_dst[4]; __u32 idiag_if;
# __u32 idiag_cookie[2] }; __u32 idiag_expires, idiag_rqueue, idiag_wqueue, idiag_uid, idiag_inode.
# Only the fields read here are named; the port is big-endian, the rest native.
_DIAG_MSG_HEAD = struct.Struct("=BB2x")
_DIAG_SPORT = struct.Struct("!H")  # at offset 4
_DIAG_SRC_OFFSET = 8  # 16 bytes: the address, IPv4 in the first 4
_DIAG_UID_INODE = struct.Struct("=II")  # at offset 64
_DIAG_MSG_SIZE = 72
_RECV_BUFFER = 1 << 16  # above the kernel's largest dump chunk (32 KiB), so no message is truncated


def _netlink_sockets(family: int, protocol: str, ports: frozenset[int]) -> list[tuple[int, str, int, int]]:
    """One inet_diag dump: (sport, src, uid, inode) of TCP LISTEN or all UDP sockets of ``family`` on ``ports``.

    Raises OSError when the socket is refused, the kernel answers with an error
    (ENOENT: no diag module for this protocol), or the reply is malformed.
    """
    states = 1 << _TCP_LISTEN if protocol == "tcp" else _ALL_STATES
    payload = _REQ_V2.pack(family, _PROTOCOLS[protocol], 0, states)
    seq = 1
    request = _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0)
    addr_len = 4 if family == socket.AF_INET else 16
    out: list[tuple[int, str, int, int]] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(10.0)
        nl.sendto(request + payload, (0, 0))
        while True:
            data = nl.recv(_RECV_BUFFER)
            if not data:
                raise OSError(errno.EIO, "sock_diag: the kernel closed the dump")
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _flags, msg_seq, _pid = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size or offset + length > len(data):
                    raise OSError(errno.EMSGSIZE, f"sock_diag: a message of {length} bytes does not fit the reply")
                body = offset + _NLMSGHDR.size
                offset += (length + 3) & ~3  # NLMSG_ALIGN
                if msg_seq != seq:
                    continue
                if kind in (_NLMSG_DONE, _NLMSG_ERROR):
                    code = struct.unpack_from("=i", data, body)[0] if length >= _NLMSGHDR.size + 4 else 0
                    if code < 0:
                        raise OSError(-code, f"sock_diag: {os.strerror(-code)}")
                    if kind == _NLMSG_DONE:
                        return out
                    continue  # an acknowledgement
                if kind != _SOCK_DIAG_BY_FAMILY or length < _NLMSGHDR.size + _DIAG_MSG_SIZE:
                    continue
                msg_family, _state = _DIAG_MSG_HEAD.unpack_from(data, body)
                if msg_family != family:
                    continue
                (sport,) = _DIAG_SPORT.unpack_from(data, body + 4)
                if sport not in ports:
                    continue
                raw = data[body + _DIAG_SRC_OFFSET : body + _DIAG_SRC_OFFSET + addr_len]
                uid, inode = _DIAG_UID_INODE.unpack_from(data, body + 64)
                out.append((sport, socket.inet_ntop(family, raw), uid, inode))


# --- /proc/net --------------------------------------------------------------------------------------------------


def _procnet_sockets(family: int, protocol: str, ports: frozenset[int]) -> list[tuple[int, str, int, int]]:
    """The same as ``_netlink_sockets``, parsed from /proc/net/{tcp,tcp6,udp,udp6} (net/ipv4/tcp_ipv4.c format).

    Each line: ``sl local_address rem_address st ... uid timeout inode``, the
    address as hex 32-bit words in host byte order, ``:`` and the port in hex.
    Raises OSError when the file cannot be read (a missing IPv6 file: none).
    """
    path = _PROC_NET[family, protocol]
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()[1:]
    except FileNotFoundError:
        if family == socket.AF_INET6:
            return []  # no IPv6 in this kernel
        raise
    out: list[tuple[int, str, int, int]] = []
    for line in lines:
        fields = line.split()
        if len(fields) < 10:
            continue
        if protocol == "tcp" and int(fields[3], 16) != _TCP_LISTEN:
            continue
        addr_hex, port_hex = fields[1].split(b":")
        port = int(port_hex, 16)
        if port not in ports:
            continue
        raw = b"".join(int(addr_hex[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(addr_hex), 8))
        out.append((port, socket.inet_ntop(family, raw), int(fields[7]), int(fields[9])))
    return out


# --- /proc/PID --------------------------------------------------------------------------------------------------


def _scan_fds(inodes: frozenset[int]) -> dict[int, dict[str, int]]:
    """pid -> {fd name: inode} for every fd in /proc/*/fd that is a socket in ``inodes``.

    Processes that end during the scan, and those whose fds this process may
    not read (another user's, when not root), are skipped. Raises OSError when
    /proc itself cannot be listed.
    """
    found: dict[int, dict[str, int]] = {}
    if not inodes:
        return found
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            names = os.listdir(fd_dir)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # ended, or not ours to read
        for name in names:
            try:
                target = os.readlink(f"{fd_dir}/{name}")
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue  # closed, or the process ended
            inode = _socket_inode(target)
            if inode in inodes:
                found.setdefault(int(entry), {})[name] = inode
    return found


def _socket_inode(link: str) -> int:
    """The inode in a ``socket:[12345]`` fd link; 0 for anything else."""
    if link.startswith("socket:[") and link.endswith("]"):
        return int(link[8:-1])
    return 0


def _identify(
    pid: int, fds: dict[str, int], by_inode: dict[int, list[Socket]], markers: Sequence[str]
) -> list[tuple[Holder, set[int]]]:
    """The holders that ``pid`` is, one per port, with the inodes confirmed; [] when it has ended.

    Everything is read through a directory fd on /proc/PID, which stays bound
    to this process: once it ends, reads fail with ESRCH even if the pid is
    reused. The stat (start time) is read before the fds are confirmed through
    that directory, so it was this process's.
    """
    try:
        proc = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        return []
    try:
        stat = read_stat(pid)
        if stat is None:
            return []
        held: set[int] = set()
        for name, inode in fds.items():
            try:
                if _socket_inode(os.readlink(f"fd/{name}", dir_fd=proc)) == inode:
                    held.add(inode)
            except (FileNotFoundError, PermissionError):
                continue  # closed since the scan, or no longer ours to read
        if not held:
            return []
        uid = _real_uid(_read(proc, "status"))
        cmdline = _cmdline(proc)
        marker = _markers(proc, markers) if markers else {}
    except (FileNotFoundError, ProcessLookupError):
        return []  # ended while we looked: not a holder any more
    finally:
        os.close(proc)
    ports: dict[PortSpec, set[int]] = {}
    for inode in held:
        for sock in by_inode[inode]:
            ports.setdefault(sock.port, set()).add(inode)
    return [(Holder(pid, stat.start_ticks, uid, cmdline, port, dict(marker)), inodes) for port, inodes in ports.items()]


def _read(proc: int, name: str, limit: int = -1) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc)
    with open(fd, "rb", closefd=True) as f:
        return f.read(limit)


def _real_uid(status: bytes) -> int:
    """The first field of ``Uid:`` (real, effective, saved, filesystem) in /proc/PID/status."""
    for line in status.splitlines():
        if line.startswith(b"Uid:"):
            return int(line.split()[1])
    raise OSError(errno.EIO, "/proc/PID/status has no Uid line")


def _cmdline(proc: int) -> str:
    """argv joined by spaces, cut at CMDLINE_MAX characters; "[comm]" when argv is empty."""
    raw = _read(proc, "cmdline", 4 * CMDLINE_MAX)  # UTF-8: at most 4 bytes a character
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    if not text:
        return "[" + _read(proc, "comm").decode(errors="replace").rstrip("\n") + "]"
    return text[:CMDLINE_MAX]


def _markers(proc: int, names: Iterable[str]) -> dict[str, str]:
    """The variables among ``names`` set in /proc/PID/environ (NUL-separated ``NAME=value``); {} if unreadable."""
    try:
        environ = _read(proc, "environ")
    except PermissionError:
        return {}
    wanted = set(names)
    out: dict[str, str] = {}
    for item in environ.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and (name := os.fsdecode(key)) in wanted:
            out[name] = os.fsdecode(value)
    return out
