"""What a follower of a child's stream sees, and how a stream resumes after a reconnect.

Every record of a child (a line or an event) has a sequence number, one
sequence for both; a Gap names the records this reader missed, exactly. So a
reader that remembers the next sequence number it expects can ask again from
there (``StreamRequest.from_seq``) after any break and get every record once:
no duplicates, and no holes that are not reported by a Gap (see
``proto/supervisor/v1/supervisor.proto``, StreamRequest, LineBatch and Gap).

The Stream request has no time filter, so ``since`` is applied here, on the
records' own times (a batch's time is when supd read its first line; the
others were read within 10 ms of it).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Iterator

from supervisor.v1 import supervisor_pb2 as pb

__all__ = ["Item", "Line", "Resume", "lines_of"]

_STREAMS = {pb.OUTPUT_STREAM_STDOUT: "stdout", pb.OUTPUT_STREAM_STDERR: "stderr"}


@dataclasses.dataclass(frozen=True, slots=True)
class Line:
    """One line of a child's output.

    ``data``: its bytes exactly as written, the ``\\n`` included when it had one
    (a line without one is a piece: see LineBatch in the proto). ``stream``:
    ``"stdout"`` or ``"stderr"``. ``time``: when supd read it (UTC), None if
    supd did not say.
    """

    seq: int
    stream: str
    generation: int
    time: datetime.datetime | None
    data: bytes

    @property
    def partial(self) -> bool:
        """True when the line did not end in a newline (a piece of a longer one, or a prompt)."""
        return not self.data.endswith(b"\n")

    @property
    def text(self) -> str:
        """The line without its newline, decoded as UTF-8 (U+FFFD for bytes that are not)."""
        return self.data.removesuffix(b"\n").decode("utf-8", errors="replace")


Item = Line | pb.Event | pb.Gap


def lines_of(batch: pb.LineBatch) -> Iterator[Line]:
    """The lines of one batch, each with its own sequence number."""
    stream = _STREAMS.get(batch.stream, str(batch.stream))
    when = batch.time.ToDatetime(tzinfo=datetime.UTC) if batch.HasField("time") else None
    data, off = batch.data, 0
    for i, length in enumerate(batch.lengths):
        yield Line(batch.first_seq + i, stream, batch.generation, when, data[off : off + length])
        off += length


def items_of(messages: Iterable[pb.StreamMessage]) -> Iterator[Item]:
    """Stream messages as lines, events and gaps."""
    for msg in messages:
        which = msg.WhichOneof("item")
        if which == "lines":
            yield from lines_of(msg.lines)
        elif which == "event":
            yield msg.event
        elif which == "gap":
            yield msg.gap


def _message_time(msg: pb.StreamMessage) -> datetime.datetime | None:
    which = msg.WhichOneof("item")
    if which == "lines" and msg.lines.HasField("time"):
        return msg.lines.time.ToDatetime(tzinfo=datetime.UTC)
    if which == "event" and msg.event.HasField("time"):
        return msg.event.time.ToDatetime(tzinfo=datetime.UTC)
    return None


class Resume:
    """The state of one logical stream across reconnects: the request to send next and what was seen.

    ``next_seq`` is the sequence number the reader expects next (None before
    the first record). ``since``, when given, drops lines and events older than
    it (aware datetime); gaps are always kept.
    """

    def __init__(self, request: pb.StreamRequest, since: datetime.datetime | None = None) -> None:
        self._first = request
        self.next_seq: int | None = request.from_seq if request.WhichOneof("start") == "from_seq" else None
        self.since = since
        self.ended = False  # a REMOVED or SHUTDOWN event came: the stream is over for good

    def request(self) -> pb.StreamRequest:
        """The request for the next attempt: the first one as given, then from the next sequence number."""
        if self.next_seq is None:
            return self._first
        again = pb.StreamRequest()
        again.CopyFrom(self._first)
        again.from_seq = self.next_seq
        return again

    def seen(self, msg: pb.StreamMessage) -> bool:
        """Record a message; False when it is one to drop (before ``since``, or already seen)."""
        which = msg.WhichOneof("item")
        if which == "lines":
            end = msg.lines.first_seq + len(msg.lines.lengths)
        elif which == "event":
            end = msg.event.seq + 1
            self.ended = self.ended or msg.event.kind in (pb.Event.KIND_REMOVED, pb.Event.KIND_SHUTDOWN)
        elif which == "gap":
            end = msg.gap.first_seq + msg.gap.count
        else:
            return False
        if self.next_seq is not None and end <= self.next_seq:
            return False  # a record this reader already has: supd never resends, but be sure
        self.next_seq = max(end, self.next_seq or 0)
        if self.since is not None and which != "gap":
            when = _message_time(msg)
            if when is not None and when < self.since:
                return False
        return True
