"""OTLP ``ExportLogsServiceRequest`` bytes for child output lines, written by hand.

Why by hand: the generated protobuf classes build and serialise about 100,000
records/s, which is the whole budget (PERFORMANCE-NOTES.md). Here everything
that is constant per batch (resource, scope), per child generation and stream
(five attributes) or per segment (the two timestamps) is serialised once with
the generated classes or as literal bytes, and a line costs only its body, its
sequence number, a severity lookup and a few length prefixes. tests/test_otlp.py
parses the output with the generated classes to prove the bytes are the same
message.

Wire format used (opentelemetry/proto/logs/v1/logs.proto)::

    ExportLogsServiceRequest.resource_logs   = 1 (ResourceLogs)
    ResourceLogs.resource = 1, .scope_logs   = 2 (ScopeLogs)
    ScopeLogs.scope = 1, .log_records        = 2 (LogRecord)
    LogRecord: time_unix_nano = 1 (fixed64), severity_number = 2 (varint),
      severity_text = 3, body = 5 (AnyValue), attributes = 6 (KeyValue),
      observed_time_unix_nano = 11 (fixed64)
    AnyValue: string_value = 1, bool_value = 2, int_value = 3
    KeyValue: key = 1, value = 2
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from supervisor._daemon.output.sinks import STDERR, Origin, Segment
from supervisor._daemon.telemetry.otlp.target import AttributeValue
from supervisor._daemon.telemetry.severity import Severity, level_of, stream_default

__all__ = ["AttributeValue", "BatchEncoder", "any_value", "origin_attributes", "varint"]


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = tuple(_varint(i) for i in range(1 << 14))
_FIRST = tuple(bytes((i | 0x80,)) for i in range(128))


def varint(n: int) -> bytes:
    """The protobuf base-128 varint of a non-negative int (two's complement for negatives).

    By table below 2**21, which covers sequence numbers for a long time: the
    Python loop costs 325 ns a call, the tables a tenth of that.
    """
    if n < 0:
        n += 1 << 64
    if n < 16384:
        return _SMALL[n]
    if n < 1 << 21:
        return _FIRST[n & 0x7F] + _SMALL[n >> 7]
    return _varint(n)


def any_value(value: AttributeValue) -> AnyValue:
    """The OTLP AnyValue of a scalar attribute value."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=value)


def _key_values(attributes: Mapping[str, AttributeValue]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()]


def origin_attributes(origin: Origin, stream: int) -> dict[str, AttributeValue]:
    """The attributes every line of one child generation on one stream carries."""
    attrs: dict[str, AttributeValue] = {
        "log.iostream": "stderr" if stream == STDERR else "stdout",
        "process.pid": origin.pid,
        "process.executable.name": os.path.basename(origin.executable),
    }
    if os.sep in origin.executable:
        attrs["process.executable.path"] = origin.executable
    attrs["supd.child.name"] = origin.child
    attrs["supd.child.generation"] = origin.generation
    return attrs


def _field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + varint(len(payload)) + payload


_SEQ_KEY = b"\x0a\x0csupd.log.seq"  # KeyValue.key = "supd.log.seq"
# By the varint length k of the sequence number: the attribute field up to the varint itself.
_SEQ_PREFIX = tuple(
    b"\x32" + bytes((len(_SEQ_KEY) + 3 + k,)) + _SEQ_KEY + b"\x12" + bytes((1 + k,)) + b"\x18" for k in range(11)
)
_PARTIAL = _field(0x32, KeyValue(key="supd.log.partial", value=AnyValue(bool_value=True)).SerializeToString())
_SEVERITY = {sev: (b"\x10" + varint(int(sev)) + _field(0x1A, sev.text.encode()) if sev else b"") for sev in Severity}
_TIMES = struct.Struct("<BQBQ")  # time_unix_nano (tag 0x09) and observed_time_unix_nano (tag 0x59)
_ORIGIN_CACHE_MAX = 1024


class BatchEncoder:
    """Accumulates LogRecords for one request; ``take()`` returns the bytes and starts over.

    Used by one thread only (the exporter's worker). ``records`` and ``size``
    (bytes of records so far) let the caller decide when a batch is full.
    """

    def __init__(self, resource: Mapping[str, AttributeValue], scope_name: str, scope_version: str = "") -> None:
        res = Resource(attributes=_key_values(resource)).SerializeToString()
        scope = InstrumentationScope(name=scope_name, version=scope_version).SerializeToString()
        self._resource_field = _field(0x0A, res)
        self._scope_field = _field(0x0A, scope)
        self._origins: dict[tuple[Origin, int], bytes] = {}
        self._parts: list[bytes] = []
        self.records = 0
        self.size = 0

    def _origin_field(self, origin: Origin, stream: int) -> bytes:
        key = (origin, stream)
        encoded = self._origins.get(key)
        if encoded is None:
            if len(self._origins) >= _ORIGIN_CACHE_MAX:
                self._origins.clear()
            kvs = _key_values(origin_attributes(origin, stream))
            encoded = b"".join(_field(0x32, kv.SerializeToString()) for kv in kvs)
            self._origins[key] = encoded
        return encoded

    def add(
        self,
        origin: Origin,
        segment: Segment,
        lines: list[bytes],
        start: int,
        *,
        max_records: int,
        max_size: int,
    ) -> int:
        """Encode ``lines[start:]`` until the batch holds ``max_records`` or ``max_size`` bytes.

        ``lines`` is ``segment.data`` split at newlines, newlines removed; the
        last one is partial unless the data ended with a newline. At least one
        line is taken when the batch is empty, whatever its size. Returns the
        index of the first line not taken.
        """
        attrs = self._origin_field(origin, segment.stream)
        times = _TIMES.pack(0x09, segment.time_ns, 0x59, segment.time_ns)
        fixed = len(times) + len(attrs)
        default = stream_default(segment.stream)
        partial_index = -1 if segment.data.endswith(b"\n") else len(lines) - 1
        stop = min(len(lines), start + max_records - self.records)
        seq = segment.first_seq + start
        parts = self._parts
        append = parts.extend
        small = _SMALL
        severity = _SEVERITY
        seq_prefix = _SEQ_PREFIX
        size = self.size
        i = start
        while i < stop:
            if size >= max_size and size:
                break
            line = lines[i]
            if not line.isascii():
                line = line.decode("utf-8", "replace").encode()
            n = len(line)
            level = level_of(line) if n else None
            sev = severity[default if level is None else level]
            nb = small[n] if n < 16384 else varint(n)
            av = 1 + len(nb) + n
            avb = small[av] if av < 16384 else varint(av)
            sb = small[seq] if seq < 16384 else varint(seq)
            sp = seq_prefix[len(sb)]
            rec = fixed + len(sev) + 1 + len(avb) + av + len(sp) + len(sb)
            if i == partial_index:
                rec += len(_PARTIAL)
                sp = _PARTIAL + sp
            rb = small[rec] if rec < 16384 else varint(rec)
            append((b"\x12", rb, times, sev, b"\x2a", avb, b"\x0a", nb, line, attrs, sp, sb))
            size += 1 + len(rb) + rec
            seq += 1
            i += 1
        self.records += i - start
        self.size = size
        return i

    def take(self) -> bytes:
        """The ExportLogsServiceRequest for everything added since the last take."""
        scope_logs = self._scope_field + b"".join(self._parts)
        resource_logs = self._resource_field + _field(0x12, scope_logs)
        self._parts = []
        self.records = 0
        self.size = 0
        return _field(0x0A, resource_logs)
