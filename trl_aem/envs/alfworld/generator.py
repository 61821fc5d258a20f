"""Offline ALFWorld: ALFRED-style PDDL problems generated from the floor plans the ``alfworld`` wheel ships.

Real ALFWorld games are PDDL problems that ALFRED's generator wrote from AI2-THOR scenes; the wheel has no
game files (they come from ``alfworld-download``) but it ships the domain (``alfred.pddl``), the text
grammar (``alfred.twl2``), ALFRED's goal library and, per floor plan, the receptacles with their real
ALFRED ids and interaction poses (``FloorPlan*-openable.json``) and the object classes present
(``FloorPlan*-objects.json``). This module builds a game from those: the room's real receptacles, each at
its own location, objects of the room's classes (1-3 instances each) placed in receptacles that can
contain them (ALFRED's ``VAL_RECEPTACLE_OBJECTS``), the ability facts of ALFRED's ``VAL_ACTION_OBJECTS``,
and a goal from ALFRED's goal library with one of its task sentences. Played through TextWorld's PDDL
engine with ALFWorld's own wrappers, observations, admissible commands and the win condition have
ALFWorld's exact form.

Choices that are ours (ALFRED's generator runs the AI2-THOR simulator, which is not available here):
object positions are random (they only matter through ids, which fix the instance numbering), lamps stand
on a desk, side table, dresser, shelf or table, stove burners / coffee machines / toasters (absent from
the pose files) get generated ids, and no target object starts inside the goal receptacle's class (so no
goal holds at the start).

Splits follow ALFRED's scenes: ``train`` and ``eval_in_distribution`` use ALFRED's training floor plans
(different seeds, so different games), ``eval_out_of_distribution`` the floor plans ALFRED keeps for
validation-unseen and test (never seen in training).
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TASK_TYPES",
    "GeneratedGame",
    "Scene",
    "generate_game",
    "load_scene",
    "mangle",
    "offline_tasks",
    "scenes_for_split",
]

# ALFWorld's six task types (ALFWorld's ids 1-6, `alfred_tw_env.TASK_TYPES`)
TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
# the receptacle class a transformation needs, and the ability fact the goal checks
_APPLIANCE = {
    "pick_clean_then_place_in_recep": ("SinkBasin", "Cleanable"),
    "pick_heat_then_place_in_recep": ("Microwave", "Heatable"),
    "pick_cool_then_place_in_recep": ("Fridge", "Coolable"),
}
_LAMPS = ("DeskLamp", "FloorLamp")
_LAMP_HOSTS = ("Desk", "SideTable", "Dresser", "Shelf", "DiningTable", "CoffeeTable")
_GENERATED_RECEPTACLES = {"StoveBurner": 4, "CoffeeMachine": 1, "Toaster": 1}
# ALFRED's validation-unseen floor plans; with ALFRED's test floor plans they form the out-of-distribution split
_UNSEEN_SCENES = (10, 219, 308, 424)
SPLITS = ("train", "eval_in_distribution", "eval_out_of_distribution")
# seed streams per split: disjoint by construction
_SPLIT_SALT = {"train": 0, "eval_in_distribution": 1, "eval_out_of_distribution": 2}


def _alfworld():
    try:
        import alfworld.gen.constants as constants
        import alfworld.gen.goal_library as goal_library
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            'ALFWorld environments need the `alfworld` and `textworld[pddl]` packages: pip install "trl_aem[alfworld]"'
        ) from error
    return constants, goal_library


def mangle(alfred_id: str) -> str:
    """ALFRED's id to PDDL-name mangling (``PlannedGameState.fix_pddl_str_chars``): ``|`` -> ``_bar_`` etc."""
    for old, new in (("-", "_minus_"), ("|", "_bar_"), ("+", "_plus_"), (".", "_dot_"), (",", "_comma_")):
        alfred_id = alfred_id.replace(old, new)
    return alfred_id


@dataclass(frozen=True)
class Scene:
    """One ALFRED floor plan: its room type, receptacles ``(alfred_id, class, pose)`` and object classes."""

    number: int
    room: str
    receptacles: tuple[tuple[str, str, tuple[float, ...]], ...]
    object_classes: tuple[str, ...]
    floor_points: tuple[tuple[float, float], ...]


def _layouts_dir() -> Path:
    import alfworld

    return Path(alfworld.__file__).parent / "gen" / "layouts"


def _receptacle_class(alfred_id: str) -> str:
    parts = alfred_id.split("|")
    # "Sink|x|y|z|SinkBasin" and "Bathtub|x|y|z|BathtubBasin": the basin is the receptacle
    return parts[-1] if len(parts) > 4 else parts[0]


@functools.cache
def load_scene(number: int) -> Scene:
    """Read floor plan ``number`` from the alfworld wheel's ``gen/layouts`` (cached)."""
    import numpy as np

    constants, _ = _alfworld()
    room = next(name for name, numbers in constants.SCENE_TYPE.items() if number in numbers)
    layouts = _layouts_dir()
    poses = json.loads((layouts / f"FloorPlan{number}-openable.json").read_text())
    classes = tuple(json.loads((layouts / f"FloorPlan{number}-objects.json").read_text()))
    receptacles = [
        (alfred_id, _receptacle_class(alfred_id), tuple(pose))
        for alfred_id, pose in sorted(poses.items())
        if _receptacle_class(alfred_id) in constants.VAL_RECEPTACLE_OBJECTS
        and _receptacle_class(alfred_id) not in constants.MOVABLE_RECEPTACLES
    ]
    points = np.load(layouts / f"FloorPlan{number}-layout.npy")
    floor = tuple((float(x), float(z)) for x, z in points)
    return Scene(number, room, tuple(receptacles), classes, floor)


def scenes_for_split(split: str) -> tuple[int, ...]:
    """Floor plans of a split: ALFRED's training scenes minus the unseen ones, or the unseen and test ones."""
    constants, _ = _alfworld()
    unseen = set(_UNSEEN_SCENES) | set(constants.TEST_SCENE_NUMBERS)
    if split in ("train", "eval_in_distribution"):
        return tuple(n for n in constants.TRAIN_SCENE_NUMBERS if n not in unseen)
    if split == "eval_out_of_distribution":
        return tuple(sorted(unseen))
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


@dataclass
class GeneratedGame:
    """A generated game: the ``.tw-pddl`` dict (``pddl_domain``, ``grammar``, ``pddl_problem``) and its goal."""

    game: dict
    task_type: str
    goal: str
    targets: dict[str, str]  # ALFWorld's pddl_params: object_target, parent_target, toggle_target
    digest: str  # content hash: two games are the same task exactly when their digests match


@functools.lru_cache(maxsize=1)
def _domain_and_grammar() -> tuple[str, str]:
    import alfworld

    data = Path(alfworld.__file__).parent / "data"
    return (data / "alfred.pddl").read_text(), (data / "alfred.twl2").read_text()


def _pickupable(constants) -> set[str]:
    holdable = set().union(*constants.VAL_RECEPTACLE_OBJECTS.values())
    static = set(constants.RECEPTACLES) - set(constants.MOVABLE_RECEPTACLES)
    return {c for c in holdable if "Sliced" not in c and c not in static and c != "Box"}


def _candidate_goals(scene: Scene, task_type: str, constants, receptacle_classes: set[str]) -> list[tuple]:
    """All (object class, receptacle class, lamp class) a task type allows in this room."""
    if scene.room not in constants.GOALS_VALID[task_type]:
        return []
    present = set(scene.object_classes) & _pickupable(constants)
    holders = {o: {r for r in receptacle_classes if o in constants.VAL_RECEPTACLE_OBJECTS[r]} for o in present}
    if task_type == "look_at_obj_in_light":
        lamps = [lamp for lamp in _LAMPS if lamp in scene.object_classes]
        if not lamps or not receptacle_classes & set(_LAMP_HOSTS):
            return []
        return [(o, "", lamp) for o in sorted(present) if holders[o] for lamp in lamps]
    appliance, ability = _APPLIANCE.get(task_type, (None, None))
    if appliance is not None and appliance not in receptacle_classes:
        return []
    goals = []
    for obj in sorted(present):
        if ability is not None and obj not in constants.VAL_ACTION_OBJECTS[ability]:
            continue
        for recep in sorted(holders[obj]):
            # the object must be able to start somewhere other than the goal receptacle class
            if recep != appliance and holders[obj] - {recep, appliance}:
                goals.append((obj, recep, ""))
    return goals


def _coordinates(rng: random.Random) -> str:
    return "|".join(f"{rng.uniform(-3.0, 3.0):+06.2f}" for _ in range(3))


def generate_game(
    scene_number: int, task_type: str, seed: int, max_object_classes: int | None = None
) -> GeneratedGame | None:
    """The game for ``(floor plan, task type, seed)``, deterministic; ``None`` when the room cannot host
    the task type (for example no lamp for ``look_at_obj_in_light``).

    ``max_object_classes`` keeps only that many of the room's object classes (the task's classes always
    stay): smaller games load faster (Fast Downward's translation grows with objects x receptacles), at
    the price of fewer distractors than ALFRED's rooms. ``None`` places every class, as ALFRED does."""
    if task_type not in TASK_TYPES:
        raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")
    constants, goal_library = _alfworld()
    scene = load_scene(scene_number)
    rng = random.Random(f"alfworld/{scene_number}/{task_type}/{seed}")

    receptacles = [(rid, cls) for rid, cls, _ in scene.receptacles]
    location_of: dict[str, str] = {}
    for rid, _cls, pose in scene.receptacles:
        x, z, rotation, horizon = pose
        location_of[rid] = f"loc|{round(x / 0.25)}|{round(z / 0.25)}|{int(rotation) // 90}|{int(horizon)}"
    for cls, count in _GENERATED_RECEPTACLES.items():
        if cls in scene.object_classes:
            for _ in range(count):
                rid = f"{cls}|{_coordinates(rng)}"
                receptacles.append((rid, cls))
                x, z = rng.choice(scene.floor_points)
                location_of[rid] = f"loc|{round(x / 0.25)}|{round(z / 0.25)}|{rng.randrange(4)}|30"
    # every receptacle at its own location: two sharing one would make "go to" the second inadmissible
    seen: dict[str, int] = {}
    for rid, _ in receptacles:
        loc = location_of[rid]
        seen[loc] = seen.get(loc, 0) + 1
        if seen[loc] > 1:
            location_of[rid] = f"{loc}|{seen[loc]}"
    receptacle_classes = {cls for _, cls in receptacles}

    goals = _candidate_goals(scene, task_type, constants, receptacle_classes)
    if not goals:
        return None
    obj_target, parent_target, toggle_target = rng.choice(goals)

    # objects: every pickupable class of the room, 1-3 instances (the target 1-3, or 2-4 for pick_two)
    holders = {
        cls: sorted(r for r in receptacle_classes if cls in constants.VAL_RECEPTACLE_OBJECTS[r])
        for cls in sorted(set(scene.object_classes) & _pickupable(constants))
    }
    if max_object_classes is not None:
        if max_object_classes < 1:
            raise ValueError(f"max_object_classes must be >= 1 or None, got {max_object_classes}")
        others = [c for c in holders if c != obj_target]
        keep = set(rng.sample(others, min(len(others), max_object_classes - 1))) | {obj_target}
        holders = {c: v for c, v in holders.items() if c in keep}
    objects: list[tuple[str, str, str]] = []  # (alfred id, class, receptacle id)
    by_class: dict[str, list[str]] = {}
    for rid, cls in receptacles:
        by_class.setdefault(cls, []).append(rid)
    for cls, allowed in holders.items():
        if cls == obj_target:
            allowed = [r for r in allowed if r != parent_target and r != _APPLIANCE.get(task_type, ("",))[0]]
            count = rng.randint(2, 4) if task_type == "pick_two_obj_and_place" else rng.randint(1, 3)
        else:
            count = rng.randint(1, 3)
        if not allowed:
            continue
        for _ in range(count):
            holder = rng.choice(by_class[rng.choice(allowed)])
            objects.append((f"{cls}|{_coordinates(rng)}", cls, holder))
    lamp_hosts = [rid for rid, cls in receptacles if cls in _LAMP_HOSTS]
    for lamp in _LAMPS:
        if lamp in scene.object_classes and lamp_hosts:
            objects.append((f"{lamp}|{_coordinates(rng)}", lamp, rng.choice(lamp_hosts)))

    start = None
    taken = set(location_of.values())
    while start is None or start in taken:
        x, z = rng.choice(scene.floor_points)
        start = f"loc|{round(x / 0.25)}|{round(z / 0.25)}|{rng.randrange(4)}|30|start"

    problem = _problem_text(
        f"{scene_number}_{task_type}_{seed}",
        receptacles,
        objects,
        location_of,
        start,
        goal_library.gdict[task_type]["pddl"].format(
            obj=obj_target, recep=parent_target, toggle=toggle_target, mrecep=""
        ),
        constants,
    )
    template = rng.choice(goal_library.gdict[task_type]["templates"])
    goal = template.format(obj=obj_target.lower(), recep=parent_target.lower(), toggle=toggle_target.lower())
    domain, grammar = _domain_and_grammar()
    game = {
        "pddl_domain": domain,
        "grammar": grammar.replace("UNKNOWN GOAL", goal),
        "pddl_problem": problem,
        "solvable": True,
    }
    targets = {"object_target": obj_target, "parent_target": parent_target, "toggle_target": toggle_target}
    digest = hashlib.sha1(problem.split("(:objects", 1)[1].encode()).hexdigest()[:16]
    return GeneratedGame(game=game, task_type=task_type, goal=goal, targets=targets, digest=digest)


def _problem_text(name, receptacles, objects, location_of, start, goal_pddl, constants) -> str:
    """ALFRED's problem layout (``planned_game_state.py``), plus ALFWorld's ``canContain`` facts."""
    object_classes = sorted({cls for _, cls, _ in objects})
    receptacle_classes = sorted({cls for _, cls in receptacles})
    locations = sorted({start, *location_of.values()})
    lines = [f"(define (problem plan_{name})", "  (:domain alfred)", "  (:objects", "    agent1 - agent"]
    lines.append("    " + " ".join(f"{c}Type" for c in object_classes) + " - otype")
    lines.append("    " + " ".join(f"{c}Type" for c in receptacle_classes) + " - rtype")
    lines += [f"    {mangle(oid)} - object" for oid, _, _ in objects]
    lines += [f"    {mangle(rid)} - receptacle" for rid, _ in receptacles]
    lines += [f"    {mangle(loc)} - location" for loc in locations]
    lines += ["  )", "  (:init", f"    (atLocation agent1 {mangle(start)})"]
    for rid, cls in receptacles:
        r = mangle(rid)
        lines += [f"    (receptacleType {r} {cls}Type)", f"    (receptacleAtLocation {r} {mangle(location_of[rid])})"]
        if cls in constants.OPENABLE_CLASS_LIST:
            lines.append(f"    (openable {r})")
    abilities = constants.VAL_ACTION_OBJECTS
    for oid, cls, holder in objects:
        o = mangle(oid)
        lines += [
            f"    (objectType {o} {cls}Type)",
            f"    (inReceptacle {o} {mangle(holder)})",
            f"    (objectAtLocation {o} {mangle(location_of[holder])})",
        ]
        if cls not in _LAMPS:
            lines.append(f"    (pickupable {o})")
        if cls in constants.MOVABLE_RECEPTACLES:
            lines.append(f"    (isReceptacleObject {o})")
        for ability, predicate in (
            ("Cleanable", "cleanable"),
            ("Heatable", "heatable"),
            ("Coolable", "coolable"),
            ("Toggleable", "toggleable"),
            ("Sliceable", "sliceable"),
        ):
            if cls in abilities[ability]:
                lines.append(f"    ({predicate} {o})")
        if holder.startswith("Fridge|"):
            lines.append(f"    (isCool {o})")  # as ALFRED marks objects that start in a fridge
    for rcls in receptacle_classes:
        for ocls in object_classes:
            if ocls in constants.VAL_RECEPTACLE_OBJECTS[rcls]:
                lines.append(f"    (canContain {rcls}Type {ocls}Type)")
    lines.append("  )")
    # the goal library's block uses '#' for the type dash and closes the `(define` itself
    return "\n".join(lines) + goal_pddl.replace(" # ", " - ")


def offline_tasks(
    split: str,
    num_tasks: int,
    seed: int = 0,
    task_types: tuple[str, ...] = TASK_TYPES,
    max_object_classes: int | None = None,
) -> list[dict]:
    """``num_tasks`` distinct task rows of a split: ``{"task_id", "scene", "task_type", "seed", "goal",
    "targets", "max_object_classes"}``. The task types rotate evenly; rooms and seeds come from the split's
    own seed stream, so the splits never share a game."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    unknown = set(task_types) - set(TASK_TYPES)
    if unknown or not task_types:
        raise ValueError(f"task_types must be a non-empty subset of {TASK_TYPES}, got {task_types!r}")
    scenes = scenes_for_split(split)
    rng = random.Random(f"alfworld-tasks/{split}/{seed}")
    tasks: list[dict] = []
    digests: set[str] = set()
    attempts = 0
    while len(tasks) < num_tasks:
        attempts += 1
        if attempts > 50 * num_tasks + 1000:
            raise RuntimeError(f"could only generate {len(tasks)} distinct {split} tasks of {num_tasks}")
        task_type = task_types[len(tasks) % len(task_types)]
        scene = rng.choice(scenes)
        game_seed = rng.randrange(2**31) * 4 + _SPLIT_SALT[split]
        game = generate_game(scene, task_type, game_seed, max_object_classes)
        if game is None or game.digest in digests:
            continue
        digests.add(game.digest)
        tasks.append(
            {
                "task_id": f"{split}/{task_type}/FloorPlan{scene}/{game_seed}",
                "scene": scene,
                "task_type": task_type,
                "seed": game_seed,
                "goal": game.goal,
                "targets": game.targets,
                "max_object_classes": max_object_classes,
            }
        )
    return tasks
