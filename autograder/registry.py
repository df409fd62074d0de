"""Episodes, exercises, checks, cases and misconceptions: what there is to grade.

Each episode has one checks module, ``autograder/checks/<episode id>.py``, that
declares an :class:`Episode` named ``EPISODE`` and attaches exercises, checks
and misconceptions to it with decorators::

    EPISODE = Episode("ep05", "Self Attention Mechanism – Handwritten from Scratch",
                      video="https://youtu.be/s8mskq-nzec", module="ep05_self_attention")
    sdpa = EPISODE.exercise("scaled_dot_product_attention")

    @sdpa.check(case(b=2, t=5, d=8), case(b=1, t=1, d=4), points=1)
    def random_inputs(impl, case, gen):
        q, k, v = ...
        return impl.scaled_dot_product_attention(q, k, v)

    @sdpa.misconception("no_scale", "The scores were not divided by √d_k ...")
    def _(q, k, v, mask=None):
        ...

Adding an episode means adding its ``solutions/`` module and its checks module;
:func:`all_episodes` finds checks modules by file name.
"""

from __future__ import annotations

import functools
import importlib
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

CHECKS_DIR = Path(__file__).parent / "checks"
EPISODE_FILE = re.compile(r"^(ep\d\d|capstone)\.py$")


@dataclass(frozen=True)
class Case:
    """One set of input sizes and options a check runs on; read as ``case.b``, ``case.t``…"""

    name: str
    params: dict

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["params"][key]
        except KeyError:
            raise AttributeError(f"case {self.__dict__.get('name')!r} has no parameter {key!r}") from None


def case(name: str | None = None, **params) -> Case:
    """Builds a :class:`Case`, naming it from its parameters unless a name is given.

    Example:
        >>> case(b=2, t=5, d=8).name
        'b2_t5_d8'
        >>> case(t=1, dtype="float64").name
        't1_float64'
        >>> case(lead=[2, 3], masked=True).name
        'lead2x3_masked'
    """
    if name is None:
        parts = []
        for k, v in params.items():
            if isinstance(v, bool):
                parts.append(k if v else f"no_{k}")
            elif isinstance(v, (list, tuple)):
                parts.append(f"{k}{'x'.join(map(str, v))}" if v else f"no_{k}")
            elif isinstance(v, str):
                parts.append(v)
            else:
                parts.append(f"{k}{v}")
        name = "_".join(parts)
    return Case(name, dict(params))


@dataclass
class Check:
    """A probe of one exercise, run on each of its cases; ``points`` is per case."""

    exercise: "Exercise"
    name: str
    probe: Callable
    cases: list[Case]
    points: float = 1.0
    hidden: bool = False
    tolerances: dict = field(default_factory=dict)
    setup: Callable | None = None
    stages: bool = False

    @property
    def description(self) -> str:
        doc = (self.probe.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else self.name.replace("_", " ")

    def item_id(self, c: Case) -> str:
        """The check id used in reports, e.g. ``ep05.scaled_dot_product_attention::random_b2_t5_d8``."""
        return f"{self.exercise.id}::{self.name}_{c.name}" if c.name else f"{self.exercise.id}::{self.name}"


@dataclass
class Misconception:
    """A named buggy variant of an exercise and the hint shown when a student's output matches it.

    ``replacement`` stands in for the exercise's function, or for its ``method``
    (default: the exercise's) on a subclass of the reference class.
    """

    exercise: "Exercise"
    name: str
    hint: str
    replacement: Callable
    method: str | None = None

    def build(self, reference_module) -> Any:
        """Returns the buggy object that replaces the exercise in ``reference_module``."""
        method = self.method or self.exercise.method
        if method is None:
            return self.replacement
        base = getattr(reference_module, self.exercise.name)
        return type(f"{base.__name__}_{self.name}", (base,), {method: self.replacement})


@dataclass
class Exercise:
    """One function or class a student writes; ``method`` is the method they write for a class."""

    episode: "Episode"
    name: str
    method: str | None = None
    checks: list[Check] = field(default_factory=list)
    misconceptions: list[Misconception] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.episode.id}.{self.name}"

    @property
    def max_score(self) -> float:
        return sum(c.points * len(c.cases) for c in self.checks)

    def check(self, *cases: Case, points: float = 1.0, hidden: bool = False,
              tolerances: dict | None = None, setup: Callable | None = None, stages: bool = False) -> Callable:
        """Decorator registering ``probe(impl, case, gen)`` as a check over ``cases``.

        Args:
            *cases: The cases to run; each is graded (and scored) separately.
            points: Points per case.
            hidden: Hidden checks report pass/fail and hints, never expected values.
            tolerances: Per-dtype :class:`~autograder.compare.Tolerance` overrides.
            setup: Optional ``setup(reference, case, gen) -> tensors``, run on the
                *reference* only; its result is handed to the probe, which is then
                called as ``probe(impl, case, gen, given)``. Use it to feed a part
                the reference's own intermediate values (teacher forcing).
            stages: The probe returns ``{stage: output}`` in pipeline order; a
                failure then starts by naming the first stage that differs.
        """
        def register(probe: Callable) -> Callable:
            names = [c.name for c in cases]
            if len(set(names)) != len(names) or not cases:
                raise ValueError(f"{self.id}::{probe.__name__}: cases must be given and named uniquely")
            self.checks.append(Check(self, probe.__name__, probe, list(cases), points, hidden,
                                     dict(tolerances or {}), setup, stages))
            return probe
        return register

    def misconception(self, name: str, hint: str, method: str | None = None) -> Callable:
        """Decorator registering a buggy variant (a function, or a method for class exercises)."""
        def register(fn: Callable) -> Callable:
            self.misconceptions.append(Misconception(self, name, hint, fn, method))
            return fn
        return register


@dataclass
class Episode:
    """One video of the series and its module, e.g. ``ep05`` / ``ep05_self_attention``."""

    id: str
    title: str
    video: str
    module: str
    exercises: list[Exercise] = field(default_factory=list)

    def exercise(self, name: str, method: str | None = None) -> Exercise:
        ex = Exercise(self, name, method)
        self.exercises.append(ex)
        return ex

    @property
    def max_score(self) -> float:
        return sum(ex.max_score for ex in self.exercises)


def episode_ids() -> list[str]:
    """Ids of all episodes with a checks module, in course order (capstone last)."""
    return list(_episode_ids())


@functools.lru_cache(maxsize=None)
def _episode_ids() -> tuple[str, ...]:
    ids = [m.group(1) for p in CHECKS_DIR.iterdir() if (m := EPISODE_FILE.match(p.name))]
    return tuple(sorted(ids, key=lambda i: (i == "capstone", i)))


def load_episode(episode_id: str) -> Episode:
    """Imports the checks module of one episode and returns its ``EPISODE``."""
    return importlib.import_module(f"autograder.checks.{episode_id}").EPISODE


def all_episodes() -> list[Episode]:
    return [load_episode(i) for i in episode_ids()]


def find_check(episode_id: str, item_id: str) -> tuple[Check, Case]:
    """Looks up the check and case behind an item id like ``ep05.x::random_b2_t5_d8``."""
    for ex in load_episode(episode_id).exercises:
        for chk in ex.checks:
            for c in chk.cases:
                if chk.item_id(c) == item_id:
                    return chk, c
    raise KeyError(item_id)


def item_seed(session_seed: int, item_id: str) -> int:
    """The seed of one check's inputs: fixed by the session seed and the check id."""
    return zlib.crc32(f"{session_seed}/{item_id}".encode())
