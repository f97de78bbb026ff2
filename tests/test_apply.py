"""Apply against a real supd: what changes, what is not touched, dry runs, supctl apply, SIGHUP re-apply of --config."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from supervisor._daemon.config_file import ConfigError, load_config
from supervisor.client import AsyncClient, Client
from supervisor.errors import InvalidArgument, ResourceExhausted
from supervisor.testing import SupervisorProcess, running_supervisor, wait_until
from supervisor.v1 import supervisor_pb2 as pb

from conftest import log_entries, signalled_while_starting

PY = sys.executable
HOLD = "import signal, sys; print(sys.argv[1], flush=True); signal.pause()"


def child_toml(name: str, word: str = "v1", **extra: str) -> str:
    """A ``[children.NAME]`` table running a child that prints ``word`` once and waits."""
    lines = [f"[children.{name}]", f"argv = [{PY!r}, '-c', {HOLD!r}, {word!r}]", "stop_grace_seconds = 2"]
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n\n"


def records(supd: Client, name: str) -> list[pb.StreamMessage]:
    return list(supd.stream(name, follow=False))


def printed(supd: Client, name: str, word: str) -> bool:
    return any(
        m.WhichOneof("item") == "lines" and word.encode() in m.lines.data for m in records(supd, name)
    )


def events(supd: Client, name: str) -> list[pb.Event]:
    return [m.event for m in records(supd, name) if m.WhichOneof("item") == "event"]


def steps(response: pb.ApplyResponse) -> dict[str, tuple[int, list[str]]]:
    return {s.name: (s.action, list(s.changed_fields)) for s in response.steps}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_apply_adds_changes_removes_and_leaves_the_unchanged_untouched(tmp_path: pathlib.Path) -> None:
    with running_supervisor(tmp_path) as sup, sup.client(timeout=30) as supd:
        first = supd.apply(child_toml("keep") + child_toml("edit") + child_toml("gone"))
        assert all(s.done and not s.error for s in first.steps), first
        assert {s.action for s in first.steps} == {pb.APPLY_ACTION_ADD}
        for name in ("keep", "edit", "gone"):
            wait_until(lambda n=name: printed(supd, n, "v1"), 10, what=f"{name} to print")  # type: ignore[misc]
        before = {c.spec.name: c for c in supd.list()}
        keep_records = records(supd, "keep")

        # A dry run plans everything and changes nothing.
        declared = child_toml("keep") + child_toml("edit", "v2") + child_toml("new")
        dry = supd.apply(declared, dry_run=True, prune=True)
        assert dry.dry_run
        expected = {
            "edit": (pb.APPLY_ACTION_CHANGE, ["argv"]),
            "gone": (pb.APPLY_ACTION_REMOVE, []),
            "keep": (pb.APPLY_ACTION_UNCHANGED, []),
            "new": (pb.APPLY_ACTION_ADD, []),
        }
        assert steps(dry) == expected
        assert not any(s.done for s in dry.steps)
        assert {c.spec.name: (c.pid, c.generation) for c in supd.list()} == {
            n: (c.pid, c.generation) for n, c in before.items()
        }

        done = supd.apply(declared, prune=True)
        assert steps(done) == expected
        assert all(s.done and not s.error for s in done.steps), done
        after = {c.spec.name: c for c in supd.list()}
        assert sorted(after) == ["edit", "keep", "new"]
        # Unchanged: the same process, and its ring holds exactly the records it held (no event, no new seq).
        assert after["keep"].pid == before["keep"].pid
        assert after["keep"].generation == before["keep"].generation
        assert records(supd, "keep") == keep_records
        # Changed: a new process with the new spec, and an APPLIED event naming the fields.
        assert after["edit"].pid != before["edit"].pid
        assert list(supd.get_spec("edit").argv)[-1] == "v2"
        wait_until(lambda: printed(supd, "edit", "v2"), 10, what="edit to print v2")
        applied = [e for e in events(supd, "edit") if e.kind == pb.Event.KIND_APPLIED]
        assert [e.message for e in applied] == ["added by apply", "spec changed by apply: argv"]  # one ring
        # Removed: its process is gone.
        wait_until(lambda: not alive(before["gone"].pid), 10, what="gone's process to end")
        # Applying the same set again touches nothing.
        again = supd.apply(declared, prune=True)
        assert {s.action for s in again.steps} == {pb.APPLY_ACTION_UNCHANGED}
        assert {c.spec.name: c.pid for c in supd.list()} == {n: c.pid for n, c in after.items()}

    # The applied set was stored: a new supd on the same store declares it again.
    with running_supervisor(tmp_path) as sup, sup.client(timeout=30) as supd:
        assert sorted(c.spec.name for c in supd.list()) == ["edit", "keep", "new"]
        assert list(supd.get_spec("edit").argv)[-1] == "v2"


def test_a_changed_child_keeps_its_stream_and_its_followers(tmp_path: pathlib.Path) -> None:
    with running_supervisor(tmp_path) as sup, sup.client(timeout=30) as supd:
        supd.apply(child_toml("edit"))
        wait_until(lambda: printed(supd, "edit", "v1"), 10, what="edit to print v1")
        before = supd.child("edit")
        seen: list[pb.StreamMessage] = []
        follower = threading.Thread(target=lambda: seen.extend(_until_line(supd.stream("edit"), b"v2")), daemon=True)
        follower.start()
        wait_until(lambda: seen, 10, what="the follower's first record")
        done = supd.apply(child_toml("edit", "v2"))
        assert all(s.done for s in done.steps), done
        follower.join(20)
        assert not follower.is_alive(), f"the follower never saw v2: {seen}"
        kinds = [m.event.kind for m in seen if m.WhichOneof("item") == "event"]
        assert pb.Event.KIND_REMOVED not in kinds and pb.Event.KIND_APPLIED in kinds, kinds
        after = supd.child("edit")
        assert after.generation == before.generation + 1 and after.pid != before.pid
        # One ring: v1's line is still there, before the event and v2's line, in one run of sequence numbers.
        held = records(supd, "edit")
        assert printed(supd, "edit", "v1") and printed(supd, "edit", "v2")
        firsts = [m.lines.first_seq if m.WhichOneof("item") == "lines" else m.event.seq for m in held]
        assert firsts == sorted(firsts), firsts


def _until_line(messages: Iterator[pb.StreamMessage], word: bytes) -> Iterator[pb.StreamMessage]:
    for message in messages:
        yield message
        if message.WhichOneof("item") == "lines" and word in message.lines.data:
            return


def test_a_plan_over_max_children_is_refused_before_anything_is_stored(tmp_path: pathlib.Path) -> None:
    with running_supervisor(tmp_path, ["--max-children", "2"]) as sup, sup.client(timeout=30) as supd:
        three = child_toml("a") + child_toml("b") + child_toml("c")
        for dry_run in (True, False):
            with pytest.raises(ResourceExhausted, match="over its limit of 2: nothing changed"):
                supd.apply(three, dry_run=dry_run)
        assert supd.list() == []
    with running_supervisor(tmp_path, ["--max-children", "5"]) as sup, sup.client(timeout=30) as supd:
        assert supd.list() == [], "a refused plan was stored"


def test_without_prune_undeclared_children_are_kept(tmp_path: pathlib.Path) -> None:
    with running_supervisor(tmp_path) as sup, sup.client(timeout=30) as supd:
        supd.spawn(name="spawned", argv=[PY, "-c", HOLD, "x"])
        response = supd.apply(child_toml("filed"))
        assert steps(response) == {"filed": (pb.APPLY_ACTION_ADD, []), "spawned": (pb.APPLY_ACTION_KEEP, [])}
        assert sorted(c.spec.name for c in supd.list()) == ["filed", "spawned"]


def test_the_async_client_applies_specs(tmp_path: pathlib.Path) -> None:
    spec = pb.ChildSpec(name="a", argv=[PY, "-c", HOLD, "x"])

    async def main(address: str) -> tuple[pb.ApplyResponse, pb.ApplyResponse]:
        async with AsyncClient(address) as supd:
            return await supd.apply(children=[spec], dry_run=True), await supd.apply(children=[spec])

    with running_supervisor(tmp_path) as sup, sup.client(timeout=30) as supd:
        dry, done = asyncio.run(main(sup.address))
        assert steps(dry) == steps(done) == {"a": (pb.APPLY_ACTION_ADD, [])}
        assert dry.dry_run and not done.dry_run and done.steps[0].done
        assert [c.spec.name for c in supd.list()] == ["a"]
        with pytest.raises(ValueError, match="not both"):
            supd.apply("", children=[spec])


def test_a_bad_file_is_refused_with_its_line_and_changes_nothing(tmp_path: pathlib.Path) -> None:
    with running_supervisor(tmp_path) as sup, sup.client(timeout=30) as supd:
        bad = child_toml("web") + "[children.web.backoff]\ninitail_seconds = 5\n"
        with pytest.raises(InvalidArgument) as caught:
            supd.apply(bad, config_name="children.toml", prune=True)
        assert caught.value.message.startswith("children.toml:6: children.web: ")
        assert supd.list() == []


def test_a_failed_start_is_that_steps_outcome(tmp_path: pathlib.Path) -> None:
    with running_supervisor(tmp_path) as sup, sup.client(timeout=30) as supd:
        text = child_toml("ok") + '[children.broken]\nargv = ["/no/such/program"]\nrestart = "never"\n'
        response = supd.apply(text)
        outcome = {s.name: (s.done, s.error) for s in response.steps}
        assert outcome["ok"] == (True, "")
        assert outcome["broken"][0] is False and "/no/such/program" in outcome["broken"][1]


def supctl(sup: SupervisorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [PY, "-m", "supervisor.cli", "--addr", sup.address, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_supctl_apply_prints_the_plan_as_a_diff(tmp_path: pathlib.Path) -> None:
    file = tmp_path / "children.toml"
    with running_supervisor(tmp_path) as sup:
        file.write_text(child_toml("a") + child_toml("b"))
        result = supctl(sup, "apply", "-f", str(file))
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["+ a  added", "+ b  added", "2 children: 2 added"]
        file.write_text(child_toml("a", "v2") + child_toml("c"))
        result = supctl(sup, "apply", "-f", str(file), "--dry-run", "--prune")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            "~ a  argv",
            "- b  removed",
            "+ c  added",
            "3 children: 1 added, 1 changed, 1 removed (dry run: nothing changed)",
        ]
        result = supctl(sup, "apply", "-f", str(file), "--dry-run", "--prune", "--json")
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert answer["dry_run"] is True
        assert [(s["name"], s["action"], s["changed_fields"]) for s in answer["steps"]] == [
            ("a", "APPLY_ACTION_CHANGE", ["argv"]), ("b", "APPLY_ACTION_REMOVE", []), ("c", "APPLY_ACTION_ADD", []),
        ]
        file.write_text(child_toml("a") + child_toml("b") + '[children.broken]\nargv = ["/no/such/program"]\n')
        result = supctl(sup, "apply", "-f", str(file))
        assert result.returncode == 1
        assert result.stdout.splitlines()[-1] == "3 children: 1 added, 2 unchanged"
        assert result.stderr.startswith("supctl: apply: broken: failed to start: ") and result.stderr.count("\n") == 1
        file.write_text("[children.a]\nargv = 5\n")
        result = supctl(sup, "apply", "-f", str(file))
        assert result.returncode == 2 and result.stdout == ""
        with pytest.raises(ConfigError) as as_config:  # the message supd --config FILE gives
            load_config(str(file))
        assert str(as_config.value).startswith(f"{file}:2: children.a: ")
        assert result.stderr == f"supctl: apply: {as_config.value}\n"


def test_sighup_reapplies_the_config_file_and_a_bad_one_changes_nothing(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "supd.toml"
    config.write_text(child_toml("web") + child_toml("old"))
    with running_supervisor(tmp_path, ["--config", str(config)]) as sup, sup.client(timeout=30) as supd:
        supd.spawn(name="spawned", argv=[PY, "-c", HOLD, "x"])
        web = wait_until(lambda: supd.child("web").pid, 10, what="web to start")
        config.write_text(child_toml("web", "v2") + child_toml("added"))
        sup.proc.send_signal(signal.SIGHUP)
        # "old" was in the file and no longer is: removed; "spawned" never was: kept.
        wait_until(
            lambda: sorted(c.spec.name for c in supd.list()) == ["added", "spawned", "web"], 15, what="the new set"
        )
        wait_until(lambda: printed(supd, "web", "v2"), 10, what="web to run the new spec")
        assert supd.child("web").pid != web
        (done,) = log_entries(sup, "apply.done")
        assert (done["change"], done["remove"], done["add"], done["keep"]) == (["web"], ["old"], ["added"], ["spawned"])
        assert done["source"] == f"SIGHUP {config}"

        config.write_text(child_toml("web", "v3") + "[children.added]\nargv = 5\n")
        running = {c.spec.name: c.pid for c in supd.list()}
        sup.proc.send_signal(signal.SIGHUP)
        failed = wait_until(lambda: log_entries(sup, "apply.failed"), 10, what="apply.failed")
        with pytest.raises(ConfigError) as as_config:
            load_config(str(config))
        assert str(as_config.value).startswith(f"{config}:6: children.added: ")
        assert [e["error"] for e in failed] == [str(as_config.value)]
        assert sup.proc.poll() is None
        assert {c.spec.name: c.pid for c in supd.list()} == running
        assert list(supd.get_spec("web").argv)[-1] == "v2"


def test_sighup_without_a_config_file_is_logged_and_ignored(tmp_path: pathlib.Path) -> None:
    with running_supervisor(tmp_path) as sup, sup.client(timeout=30) as supd:
        supd.spawn(name="spawned", argv=[PY, "-c", HOLD, "x"])
        sup.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: log_entries(sup, "supd.sighup.ignored"), 10, what="supd.sighup.ignored")
        assert sup.proc.poll() is None
        assert [c.spec.name for c in supd.list()] == ["spawned"]


def sighup_while_starting(directory: pathlib.Path, config: pathlib.Path) -> bool:
    """Start the `supd` command, SIGHUP it once it catches SIGHUP, see the file applied; whether that was early.

    supd is frozen as soon as it catches SIGHUP; if that is still in its imports (one thread, no socket), the
    SIGHUP sent then is one the daemon's receiver could not have caught.
    """
    with signalled_while_starting(directory, config, signal.SIGHUP) as (proc, early, stderr):
        (done,) = wait_until(lambda: log_entries(stderr, "apply.done"), 30, what="the SIGHUP's apply")
        assert done["unchanged"] == ["web"] and done["source"] == f"SIGHUP {config}"
        assert proc.poll() is None
    return early


def test_a_sighup_during_start_up_is_applied_once_the_children_are_up(tmp_path: pathlib.Path) -> None:
    """The `supd` command holds SIGHUP from its first instant (by default it ends a process), as SIGTERM."""
    config = tmp_path / "supd.toml"
    config.write_text(child_toml("web"))
    for attempt in range(3):  # a loaded machine may let supd past its imports before the poll sees the handler
        directory = tmp_path / str(attempt)
        directory.mkdir()
        if sighup_while_starting(directory, config):
            return
    pytest.fail("supd never caught SIGHUP while still starting (one thread, no socket): the signal is not held")
