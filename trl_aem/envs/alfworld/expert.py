"""The ALFWorld expert: the next command toward the goal, computed from the game's current PDDL facts.

The six ALFWorld task types have short optimal plans once the expert knows where every object is (it reads
the true state, as ALFWorld's planner expert does): fetch a target object (go to its receptacle, open it if
closed, take it), transform it if the task asks (clean / heat / cool with the sink basin / microwave /
fridge), then bring it to the goal receptacle (go, open, move) or, for ``look_at_obj_in_light``, to a lamp
and turn it on. It replans from the facts every step, so it recovers from detours (an object in the hands
that is not wanted is put away first). ``AlfWorldEnv`` falls back to TextWorld's Fast Downward planner when
this expert's command is not admissible (states real games can reach that it does not model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["WorldView", "next_command"]

_PROCESS = {
    "pick_clean_then_place_in_recep": ("sinkbasin", "isclean", "clean"),
    "pick_heat_then_place_in_recep": ("microwave", "ishot", "heat"),
    "pick_cool_then_place_in_recep": ("fridge", "iscool", "cool"),
}


def _kind(type_name: str) -> str:
    """``'appletype '`` (a demangled PDDL type) -> ``'apple'``."""
    name = type_name.strip().lower()
    return name[: -len("type")] if name.endswith("type") else name


@dataclass
class WorldView:
    """The facts the expert needs, by display name (``'apple 1'``, ``'fridge 1'``)."""

    here: str | None = None
    held: str | None = None
    receptacle_at: dict[str, str] = field(default_factory=dict)
    inside: dict[str, str] = field(default_factory=dict)
    object_kind: dict[str, str] = field(default_factory=dict)
    receptacle_kind: dict[str, str] = field(default_factory=dict)
    flags: set[tuple[str, str]] = field(default_factory=set)  # (predicate, entity): opened, openable, ishot ...
    can_contain: set[tuple[str, str]] = field(default_factory=set)  # (receptacle kind, object kind)

    @classmethod
    def from_facts(cls, facts) -> WorldView:
        """Build from TextWorld's human-readable facts (``state["facts"]`` of a demangled PddlEnv)."""
        view = cls()
        for fact in facts:
            name, args = fact.name, [a.name.strip() for a in fact.arguments]
            if name == "atlocation":
                view.here = args[1]
            elif name == "holds":
                view.held = args[1]
            elif name == "receptacleatlocation":
                view.receptacle_at[args[0]] = args[1]
            elif name == "inreceptacle":
                view.inside[args[0]] = args[1]
            elif name == "objecttype":
                view.object_kind[args[0]] = _kind(args[1])
            elif name == "receptacletype":
                view.receptacle_kind[args[0]] = _kind(args[1])
            elif name == "cancontain":
                view.can_contain.add((_kind(args[0]), _kind(args[1])))
            elif len(args) == 1:
                view.flags.add((name, args[0]))
        return view

    def has(self, predicate: str, entity: str) -> bool:
        return (predicate, entity) in self.flags

    def receptacles_of(self, kind: str) -> list[str]:
        return sorted(r for r, k in self.receptacle_kind.items() if k == kind)

    def objects_of(self, kind: str) -> list[str]:
        return sorted(o for o, k in self.object_kind.items() if k == kind)


def _sort_key(name: str) -> tuple[str, int]:
    head, _, number = name.rpartition(" ")
    return (head, int(number)) if number.isdigit() else (name, 0)


def _approach(view: WorldView, receptacle: str) -> str | None:
    """The command that brings the agent to ``receptacle`` and opens it, or None once both hold."""
    if view.here != view.receptacle_at.get(receptacle):
        return f"go to {receptacle}"
    if view.has("openable", receptacle) and not view.has("opened", receptacle):
        return f"open {receptacle}"
    return None


def _fetch(view: WorldView, candidates: list[str]) -> str | None:
    """Go to and take one of ``candidates`` (those in receptacles; nearest first: here, then not closed)."""
    reachable = [o for o in candidates if o in view.inside]
    if not reachable:
        return None

    def cost(obj: str) -> tuple:
        holder = view.inside[obj]
        closed = view.has("openable", holder) and not view.has("opened", holder)
        return (view.receptacle_at.get(holder) != view.here, closed, _sort_key(obj))

    target = min(reachable, key=cost)
    holder = view.inside[target]
    return _approach(view, holder) or f"take {target} from {holder}"


def _put_away(view: WorldView, obj: str, avoid: set[str]) -> str | None:
    """Put an unwanted held object into some receptacle that can contain it (one here first)."""
    kind = view.object_kind.get(obj, "")
    options = [r for r, k in view.receptacle_kind.items() if (k, kind) in view.can_contain and r not in avoid]
    if not options:
        return None
    target = min(options, key=lambda r: (view.receptacle_at.get(r) != view.here, _sort_key(r)))
    return _approach(view, target) or f"move {obj} to {target}"


def next_command(view: WorldView, task_type: str, targets: dict[str, str]) -> str | None:
    """The expert's next command for ALFWorld task ``task_type`` with ALFWorld's ``pddl_params``-style
    ``targets`` (``object_target``, ``parent_target``, ``toggle_target``); ``None`` if it has none."""
    wanted = targets["object_target"].lower()
    if task_type == "look_at_obj_in_light":
        lamp_kind = targets["toggle_target"].lower()
        if view.held is not None and view.object_kind.get(view.held) != wanted:
            return _put_away(view, view.held, avoid=set())
        if view.held is None:
            return _fetch(view, view.objects_of(wanted))
        lamps = [lamp for lamp in view.objects_of(lamp_kind) if lamp in view.inside]
        if not lamps:
            return None
        lamp = min(lamps, key=lambda x: (not view.has("istoggled", x), _sort_key(x)))
        if view.here != view.receptacle_at.get(view.inside[lamp]):
            return f"go to {view.inside[lamp]}"
        return None if view.has("istoggled", lamp) else f"use {lamp}"

    goal_kind = targets["parent_target"].lower()
    goal_receptacles = view.receptacles_of(goal_kind)
    if not goal_receptacles:
        return None
    appliance_kind, ready_flag, verb = _PROCESS.get(task_type, (None, None, None))

    def ready(obj: str) -> bool:
        return ready_flag is None or view.has(ready_flag, obj)

    if task_type == "pick_two_obj_and_place":
        # both objects must end in the same receptacle: use the one already holding the most
        def placed(r: str) -> list[str]:
            return [o for o in view.objects_of(wanted) if view.inside.get(o) == r]

        destination = max(goal_receptacles, key=lambda r: (len(placed(r)), -goal_receptacles.index(r)))
        done = set(placed(destination))
    else:
        # prefer a receptacle that needs no opening
        destination = min(goal_receptacles, key=lambda r: (view.has("openable", r), _sort_key(r)))
        done = {o for o in view.objects_of(wanted) if view.inside.get(o) in goal_receptacles and ready(o)}

    if view.held is not None:
        if view.object_kind.get(view.held) != wanted:
            return _put_away(view, view.held, avoid=set(goal_receptacles))
        if not ready(view.held):
            appliances = view.receptacles_of(appliance_kind)
            if not appliances:
                return None
            appliance = appliances[0]
            if view.here != view.receptacle_at.get(appliance):
                return f"go to {appliance}"
            return f"{verb} {view.held} with {appliance}"
        return _approach(view, destination) or f"move {view.held} to {destination}"
    return _fetch(view, [o for o in view.objects_of(wanted) if o not in done])
