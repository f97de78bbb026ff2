"""Child programs that leave orphans behind, and a PID 1 that never reaps them.

    pid1_child.py double-fork MARKS       fork, the child forks a grandchild and exits; the grandchild
                                          waits until its parent is gone (so it is re-parented), appends
                                          its PID and a newline to MARKS and exits 0; this program exits 0 once the
                                          grandchild is gone (so supd finds no straggler in the session)
    pid1_child.py orphans N MARKS         the same N times in a row: N orphans, each appending a line
    pid1_child.py lazy-init PROGRAM...    as PID 1: run PROGRAM, wait for it alone, then wait forever
                                          without reaping anything (what a naive container init does)

Orphans signal their parent's exit through a pipe (EOF), never by sleeping.
"""

from __future__ import annotations

import os
import signal
import sys


def orphan(marks_fd: int) -> None:
    """Fork a child that forks the orphan and exits; wait for that child. The orphan outlives its parent.

    The orphan inherits every open fd, the write end of ``main``'s done pipe too, and holds them until it exits.
    """
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:
        if os.fork() == 0:
            os.close(w)
            while os.read(r, 1):  # EOF once the middle process is gone
                pass
            os.write(marks_fd, b"%d\n" % os.getpid())
            os._exit(0)
        os._exit(0)
    os.close(r)
    os.close(w)
    os.waitpid(middle, 0)


def main(argv: list[str]) -> int:
    match argv:
        case ["double-fork", marks]:
            count = 1
        case ["orphans", n, marks]:
            count = int(n)
        case ["lazy-init", *program] if program:
            pid = os.posix_spawn(program[0], program, dict(os.environ))
            os.waitpid(pid, 0)
            signal.pause()  # orphans now pile up as zombies: nobody waits for them
            return 0
        case _:
            print(__doc__, file=sys.stderr)
            return 2
    fd = os.open(marks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    done_r, done_w = os.pipe()
    for _ in range(count):
        orphan(fd)
    os.close(done_w)
    while os.read(done_r, 1):  # EOF once every orphan has exited
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
