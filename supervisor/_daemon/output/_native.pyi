"""Types of the C core (_native.c); each function's docstring there names the Python code it matches."""

from array import array
from collections.abc import Sequence

COUNT_PATH: str  # "avx2" or "sse2": how newlines are counted on this CPU

def cut(
    tail: bytes, buf: bytes | bytearray | memoryview, n: int, max_line: int, /
) -> tuple[list[bytes], list[int], bytes]: ...
def read_cut(
    fd: int, buf: bytearray, size: int, tail: bytes, max_line: int, /
) -> tuple[int, list[bytes], list[int], bytes]: ...
def line_count(data: bytes | bytearray | memoryview, start: int = 0, end: int = -1, /) -> int: ...
def line_lengths(data: bytes | bytearray | memoryview, /) -> bytes: ...
def line_offset(data: bytes | bytearray | memoryview, k: int, /) -> int: ...
def take(data: bytes, offset: int, budget: int, at_least_one: bool, /) -> tuple[int, int]: ...
def line_batch(
    first_seq: int,
    stream: int,
    generation: int,
    time_ns: int,
    parts: Sequence[tuple[bytes, int, int, bytes | memoryview | array[int] | None]],
    /,
) -> bytes: ...
