"""supctl top's pure parts: rates from successive snapshots, short texts, the cursor, the keys, key decoding.

No supd and no terminal: these are the decisions the live view makes, checked one by one
(tests/test_top.py drives the whole view in tmux against a real supd).
"""

from __future__ import annotations

import datetime

import pytest

from supervisor._top import control
from supervisor._top.model import Cursor, Sample, header_line, line_rates, rate_text, rows_of, short_exit, window
from supervisor._top.terminal import decode
from supervisor.v1 import supervisor_pb2 as pb


def child(name: str, out: int = 0, err: int = 0, **fields: object) -> pb.ChildInfo:
    return pb.ChildInfo(spec=pb.ChildSpec(name=name), stdout_lines=out, stderr_lines=err, **fields)


def test_rate_is_the_change_of_both_line_counters_over_the_seconds_between_snapshots():
    before = Sample.of(100.0, [child("web", out=10, err=5), child("db", out=7)])
    now = Sample.of(102.5, [child("web", out=30, err=10), child("db", out=7)])
    assert line_rates(before, now) == {"web": 10.0, "db": 0.0}


def test_rate_is_unknown_without_an_earlier_snapshot_for_a_new_child_and_after_a_counter_went_back():
    now = Sample.of(10.0, [child("web", out=50), child("new", out=3), child("again", out=2)])
    assert line_rates(None, now) == {"web": None, "new": None, "again": None}
    before = Sample.of(9.0, [child("web", out=40), child("again", out=90)])  # "again" was removed and respawned
    assert line_rates(before, now) == {"web": 10.0, "new": None, "again": None}


def test_rate_is_unknown_when_no_time_passed():
    sample = Sample.of(5.0, [child("web", out=1)])
    assert line_rates(sample, sample) == {"web": None}


@pytest.mark.parametrize(
    ("rate", "text"), [(None, "-"), (0.0, "0.0"), (0.25, "0.2"), (9.94, "9.9"), (9.96, "10"), (4210.4, "4210")]
)
def test_rate_text(rate: float | None, text: str):
    assert rate_text(rate) == text


@pytest.mark.parametrize(
    ("exit_status", "text"),
    [
        (None, "-"),
        (pb.ExitStatus(exited=True, code=3, description="exited with code 3"), "exit 3"),
        (pb.ExitStatus(exited=True, code=0, requested=True), "exit 0 (requested)"),
        (pb.ExitStatus(signal=9, signal_name="SIGKILL", killed_after_grace=True, requested=True),
         "SIGKILL (after grace, requested)"),
        (pb.ExitStatus(signal=11, signal_name="SIGSEGV", core_dumped=True), "SIGSEGV (core)"),
        (pb.ExitStatus(signal=64), "signal 64"),
    ],
)
def test_short_exit(exit_status: pb.ExitStatus | None, text: str):
    info = child("web") if exit_status is None else child("web", last_exit=exit_status)
    assert short_exit(info) == text


def test_rows_are_sorted_by_name_and_show_every_column():
    children = [
        child("web", out=9, state=pb.CHILD_STATE_RUNNING, health=pb.CHILD_HEALTH_READY, pid=4242, generation=3,
              restart_count=2, uptime_seconds=184.0, export_dropped_lines=17,
              last_exit=pb.ExitStatus(exited=True, code=1)),
        child("api", state=pb.CHILD_STATE_BACKOFF, health=pb.CHILD_HEALTH_DOWN, generation=1),
    ]
    rows = rows_of(children, {"web": 12.5, "api": None})
    assert [r.name for r in rows] == ["api", "web"]
    assert rows[0].cells() == ("api", "BACKOFF", "DOWN", "-", "1", "0", "-", "-", "0", "-")
    assert rows[1].cells() == ("web", "RUNNING", "READY", "4242", "3", "2", "3m04s", "12", "17", "exit 1")


def test_header_names_supd_its_address_the_count_and_the_refresh_time():
    health = pb.HealthResponse(children=[child("a"), child("b")], version="0.1.0", supervisor_uptime_seconds=65)
    when = datetime.datetime(2026, 11, 30, 9, 41, 7)
    assert header_line("unix:///run/supd.sock", health, when) == (
        "supd 0.1.0, up 1m05s: 2 children, refreshed 09:41:07, at unix:///run/supd.sock"
    )
    one = pb.HealthResponse(children=[child("a")], log_dropped_events=4)
    assert header_line("x:1", one, when) == (
        "supd (unknown version), up -: 1 child, 4 own log events dropped, refreshed 09:41:07, at x:1"
    )


def test_cursor_keeps_its_child_by_name_and_takes_the_place_of_one_that_went():
    names = ["a", "b", "c"]
    assert Cursor().settle(names) == Cursor("a", 0)
    assert Cursor("c", 2).settle(["b", "c"]) == Cursor("c", 1)  # "a" went: still on "c"
    assert Cursor("b", 1).settle(["a", "c"]) == Cursor("c", 1)  # "b" went: the one now in its place
    assert Cursor("c", 2).settle(["a"]) == Cursor("a", 0)
    assert Cursor("a", 0).settle([]) == Cursor(None, 0)


def test_cursor_moves_and_stops_at_the_ends():
    names = ["a", "b", "c"]
    assert Cursor("a", 0).move(names, 1) == Cursor("b", 1)
    assert Cursor("c", 2).move(names, 1) == Cursor("c", 2)
    assert Cursor("a", 0).move(names, -1) == Cursor("a", 0)
    assert Cursor().move([], 1) == Cursor(None, 0)


NAMES = ["alpha", "beta"]


def press_all(*keys: str) -> tuple[control.View, list[control.Request]]:
    view, requests = control.View(), []
    for key in keys:
        view, req = control.press(view, key, NAMES)
        if req is not None:
            requests.append(req)
    return view, requests


def test_keys_select_restart_and_follow_the_selected_child():
    assert press_all("j", "r")[1] == [control.Restart("beta")]
    assert press_all("down", "up", "r")[1] == [control.Restart("alpha")]
    view, requests = press_all("j", "enter")
    assert (view.mode, view.target, requests) == (control.Mode.LOGS, "beta", [control.Follow("beta")])
    assert press_all("l")[1] == [control.Follow("alpha")]


def test_logs_take_only_esc_or_q_back_to_the_table():
    view, requests = press_all("l", "r", "s", "j", "esc")
    assert view.mode is control.Mode.TABLE
    assert requests == [control.Follow("alpha"), control.Unfollow()]
    assert press_all("l", "q")[1] == [control.Follow("alpha"), control.Unfollow()]  # q leaves logs, not top


def test_stop_waits_for_y_and_any_other_key_keeps_the_child_running():
    view, requests = press_all("j", "s")
    assert (view.mode, view.target, requests) == (control.Mode.CONFIRM_STOP, "beta", [])
    assert press_all("j", "s", "y")[1] == [control.Stop("beta")]
    view, requests = press_all("j", "s", "n")
    assert (view.mode, requests) == (control.Mode.TABLE, [])
    assert press_all("s", "q")[1] == []  # q answers the question; it does not quit


def test_q_quits_and_keys_do_nothing_without_children():
    assert press_all("q")[1] == [control.Quit()]
    view, req = control.press(control.View(), "r", [])
    assert (view.cursor.name, req) == (None, None)


def test_decode_names_keys_and_skips_sequences_it_has_no_use_for():
    assert decode(b"jk") == ["j", "k"]
    assert decode(b"\x1b[A\x1b[B\x1bOA\x1bOB") == ["up", "down", "up", "down"]
    assert decode(b"\r\n\x1b") == ["enter", "enter", "esc"]
    assert decode(b"\x1b[15~q\x1b[1;5Cr") == ["q", "r"]  # F5 and Ctrl-Right skipped whole
    assert decode(b"\x00\x7fx") == ["x"]


@pytest.mark.parametrize(
    ("count", "index", "room", "shown"),
    [
        (3, 2, 10, range(3)),  # all fit
        (20, 0, 5, range(5)),
        (20, 10, 5, range(8, 13)),  # the selected row in the middle
        (20, 19, 5, range(15, 20)),  # no further than the last row
        (20, 3, 0, range(3, 4)),  # at least the selected row
    ],
)
def test_window_keeps_the_selected_row_on_screen(count: int, index: int, room: int, shown: range):
    assert window(count, index, room) == shown
    assert index in shown


def test_table_screen_shows_the_rows_around_the_selected_one_when_they_do_not_fit():
    import io

    from rich.console import Console

    from supervisor._top.view import table_screen

    rows = rows_of([child(f"c{i:02d}", state=pb.CHILD_STATE_RUNNING) for i in range(20)], {})
    view = control.View(cursor=Cursor("c15", 15))
    console = Console(file=io.StringIO(), width=100, height=12, color_system=None)
    console.print(table_screen("supd 0.1.0, up 1s", rows, view, None, "restart c15: RUNNING", console=console))
    screen = console.file.getvalue().splitlines()
    assert len(screen) == 12, screen
    names = [line.lstrip(">").split()[0] for line in screen[2:-2]]
    assert names == [f"c{i:02d}" for i in range(11, 19)], screen  # 8 rows fit: c15 in the middle
    assert screen[2 + names.index("c15")].startswith(">")
    assert screen[-2].rstrip() == "rows 12-19 of 20; restart c15: RUNNING"
