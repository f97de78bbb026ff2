"""Apply: carry out a plan (children/plan.py) on the registry, store first, then processes.

Order, so that a supd killed at any instant restarts with the old set or the
new one, never a mix:

1. the plan is computed from the registry's children and logged
   (``apply.planned``); a dry run ends here;
2. every spec change is written in one SQLite transaction
   (``StateStore.apply_specs``): specs of added and changed children stored
   (``persist``), removed children forgotten with their stored state;
3. the process changes: removals first (in parallel, freeing their ports),
   then changed and added children by ascending ``start_order``, one order's
   children together, as at boot. A changed child is stopped, then started
   with the new spec, its stored state kept; with the same ring sizes it keeps
   its ring, sequence numbers, followers and generation count
   (``Registry.respec``), else it is declared anew. Each added or changed
   child gets an APPLIED event. A step that fails (a start that fails, say) is
   reported in its outcome and in ``apply.failed``; the others go on.

Unchanged children and, without prune, undeclared ones are not touched: no
stop, no event, their rings as they were. A plan that would take supd past
``--max-children`` is refused (RESOURCE_EXHAUSTED) before anything is stored,
a dry run included. Applies run one at a time; other
requests are not held back meanwhile: a Spawn of a name the plan adds makes
that step fail (ALREADY_EXISTS), reported like any failed step.

The declared set of an Apply request is parsed here, by supd, from the TOML
text the client sends (``config_toml``) with the code that reads ``--config``:
the same checks and the same line-numbered messages, whatever the client's
version. Programmatic callers may send specs instead (``children``); both are
checked structurally only, as ``--config`` is: a program missing now is that
child's failed start, not a refused request.
"""

from __future__ import annotations

from collections.abc import Sequence, Set

import anyio
import structlog

from supervisor._daemon.children.plan import Action, Plan, Step, plan
from supervisor._daemon.children.registry import Registry
from supervisor._daemon.config_file import ConfigError, parse_config
from supervisor._daemon.state.store import StoreError
from supervisor.errors import InvalidArgument, ResourceExhausted, SupervisorError, Unavailable
from supervisor.spec import ChildSpec, spec_from_proto, spec_to_proto
from supervisor.v1 import supervisor_pb2 as pb

__all__ = ["Applier", "declared_of"]

log = structlog.get_logger("supd.apply")


def declared_of(request: pb.ApplyRequest) -> list[ChildSpec]:
    """The children an ApplyRequest declares; InvalidArgument with ``--config``'s message when unusable."""
    if request.config_toml and request.children:
        raise InvalidArgument("give config_toml or children, not both")
    if request.config_toml:
        try:
            return list(parse_config(request.config_toml, request.config_name or "config").children)
        except ConfigError as exc:
            raise InvalidArgument(str(exc)) from exc
    return [spec_from_proto(spec, check_runnable=False) for spec in request.children]


def _event_message(step: Step) -> str:
    if step.action is Action.ADD:
        return "added by apply"
    return f"spec changed by apply: {', '.join(step.changed_fields)}"


class Applier:
    """Applies declared sets to one registry, one at a time."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._lock = anyio.Lock()

    async def apply(
        self,
        declared: Sequence[ChildSpec],
        *,
        prune: bool | Set[str] = False,
        dry_run: bool = False,
        persist: bool = True,
        source: str = "rpc",
    ) -> pb.ApplyResponse:
        """Plan and (unless ``dry_run``) carry out; the plan with each step's outcome.

        ``prune``: True removes every undeclared child, a set only those of its
        names. ``persist`` stores the declared specs, as Spawn does (False for
        ``--config`` children, which the file declares again at every start).
        Raises InvalidArgument (a name declared twice), Unavailable (shutting
        down, or the store's transaction failed: then nothing changed).
        """
        async with self._lock:
            registry = self._registry
            current = {child.name: child.spec for child in registry.all()}
            the_plan = plan(current, declared, prune=prune)
            log.info("apply.planned", source=source, dry_run=dry_run, **the_plan.summary())
            self._check_room(the_plan, len(current))
            if dry_run:
                return _response(the_plan, None, dry_run=True)
            if registry.closing:
                raise Unavailable("supd is shutting down")
            await self._store(the_plan, persist)
            errors = await self._carry_out(the_plan)
            if errors:
                log.error("apply.failed", source=source, errors=errors)
            else:
                log.info("apply.done", source=source, **the_plan.summary())
            return _response(the_plan, errors, dry_run=False)

    def _check_room(self, the_plan: Plan, current: int) -> None:
        limit = self._registry.max_children
        after = current + len(the_plan.of(Action.ADD)) - len(the_plan.of(Action.REMOVE))
        if limit and after > limit:
            log.error("apply.failed", error="over --max-children", children=after, limit=limit)
            raise ResourceExhausted(
                f"the plan leaves supd with {after} children, over its limit of {limit}: nothing changed; prune or"
                f" remove children, or start supd with a higher --max-children"
            )

    async def _store(self, the_plan: Plan, persist: bool) -> None:
        keeper = self._registry.keeper
        if keeper is None or not the_plan.changes:
            return
        put = [
            (s.name, spec_to_proto(s.spec).SerializeToString())
            for s in the_plan.of(Action.ADD, Action.CHANGE)
            if persist and s.spec is not None
        ]
        try:
            await keeper.store.apply_specs(put, [s.name for s in the_plan.of(Action.REMOVE)])
        except StoreError as exc:
            log.error("apply.failed", error=str(exc), detail="the store refused the spec changes; nothing changed")
            raise Unavailable(f"nothing changed: {exc}") from exc

    async def _carry_out(self, the_plan: Plan) -> dict[str, str]:
        """Stop the removed, then start the changed and added by start order; errors by child name."""
        errors: dict[str, str] = {}

        async def one(step: Step) -> None:
            try:
                if step.action is Action.REMOVE:
                    await self._registry.remove(step.name)
                    return
                assert step.spec is not None
                if step.action is Action.CHANGE:
                    driver = await self._registry.respec(step.spec, _event_message(step))
                else:
                    driver = await self._registry.spawn(step.spec, persist=False)
                    driver.note_applied(_event_message(step))
                if driver.last_start_error:  # declared, but its first start failed (it retries by its policy)
                    errors[step.name] = f"failed to start: {driver.last_start_error}"
            except SupervisorError as exc:
                errors[step.name] = exc.message

        async with anyio.create_task_group() as tg:
            for step in the_plan.of(Action.REMOVE):
                tg.start_soon(one, step)
        starting = the_plan.of(Action.CHANGE, Action.ADD)
        for order in sorted({s.spec.start_order for s in starting if s.spec is not None}):
            async with anyio.create_task_group() as tg:
                for step in starting:
                    if step.spec is not None and step.spec.start_order == order:
                        tg.start_soon(one, step)
        return errors


def _response(the_plan: Plan, errors: dict[str, str] | None, *, dry_run: bool) -> pb.ApplyResponse:
    return pb.ApplyResponse(
        dry_run=dry_run,
        steps=[
            pb.ApplyStep(
                name=s.name,
                action=s.action.value,
                changed_fields=s.changed_fields,
                done=errors is not None and s.name not in errors,
                error=(errors or {}).get(s.name, ""),
            )
            for s in the_plan.steps
        ],
    )
