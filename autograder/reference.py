"""Where expected outputs come from.

:class:`LiveReference` runs each probe on ``solutions/`` in the grader's own
process (trusted code), and runs the misconception variants the same way.
:class:`FixtureReference` reads the same results from a file recorded with
``dsgrade fixtures`` (for a student release that ships without ``solutions/``).
Checks never know which one is in use.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .values import decode, encode


PACKAGED_FIXTURES = Path(__file__).with_name("public_fixtures.bin")  # present only in a student release


def choose_reference(fixtures: str | None = None):
    """Where expected outputs come from: a fixtures file if one is named, else the public fixtures a
    student release ships with, else the live ``solutions/`` package."""
    if fixtures:
        return FixtureReference(Path(fixtures))
    if PACKAGED_FIXTURES.exists():
        return FixtureReference(PACKAGED_FIXTURES)
    return LiveReference()


class ReferenceFailure(Exception):
    """The reference itself failed: a bug in the course, not in the student's code."""


class LiveReference:
    """Expected outputs computed from ``solutions/`` (cached per check and seed)."""

    def __init__(self):
        self._cache: dict[tuple, object] = {}

    def _module(self, episode):
        module = importlib.import_module(f"solutions.{episode.module}")
        if not self._cache:  # torch is loaded by now: tiny probes run fastest on one thread, and the
            import torch  # other core is the worker's

            torch.set_num_threads(1)
        return module

    def given(self, check, c, seed: int):
        """What the check's ``setup`` computes on the reference (None for most checks)."""
        key = (check.item_id(c), seed, "$given")
        if key not in self._cache:
            from .probing import run_setup

            self._cache[key] = self._run(run_setup, check, c, self._module(check.exercise.episode), seed)
        return self._cache[key]

    def expected(self, check, c, seed: int):
        """The reference's plain result for one check, case and seed."""
        key = (check.item_id(c), seed, None)
        if key not in self._cache:
            from .probing import run_probe

            given = self.given(check, c, seed)
            self._cache[key] = self._run(run_probe, check, c, self._module(check.exercise.episode), seed, given)
        return self._cache[key]

    def call(self, exercise_id: str, args: list, kwargs: dict):
        """The reference exercise function on recorded (plain) arguments, as a plain result; None when the
        reference cannot run on them (see :mod:`autograder.dependencies`)."""
        import torch

        from . import registry
        from .dependencies import rebuild
        from .values import to_plain

        episode_id, name = exercise_id.split(".", 1)
        module = self._module(registry.load_episode(episode_id))
        try:
            with torch.no_grad():
                return to_plain(getattr(module, name)(*rebuild(args, module), **rebuild(kwargs, module)))
        except Exception:  # noqa: BLE001 - arguments it does not take: no verdict
            return None

    def misconception(self, misconception, check, c, seed: int):
        """The plain result of one misconception variant on the same inputs."""
        key = (check.item_id(c), seed, misconception.name)
        if key not in self._cache:
            from .probing import run_probe, variant

            module = self._module(check.exercise.episode)
            impl = variant(module, check.exercise.name, misconception.build(module))
            try:
                self._cache[key] = run_probe(check, c, impl, seed, self.given(check, c, seed))
            except Exception:  # a variant that crashes on this case simply matches nothing
                self._cache[key] = _CRASHED
        return self._cache[key]

    @staticmethod
    def _run(fn, check, c, *args):
        try:
            return fn(check, c, *args)
        except Exception as e:
            raise ReferenceFailure(f"the reference failed on {check.item_id(c)}: {type(e).__name__}: {e}") from e


class _Crashed:
    """Marks a misconception variant that raised on a case."""


_CRASHED = _Crashed()


class FixtureReference:
    """Expected outputs read from a fixtures file (one seed, recorded from ``solutions/``).

    Args:
        path: The file written by :func:`record_fixtures`.
        fallback: Where the outputs of misconception variants come from when the file holds
            none (a batch records only the expected values and computes variants on demand).
    """

    def __init__(self, path: Path, fallback=None):
        body = Path(path).read_bytes()
        data = decode(body, max_header=len(body))  # the course's own file: its header may be large
        self.seed = data["seed"]
        self.public_only = bool(data.get("public_only"))  # a student release: no hidden check is in it
        self._entries = data["items"]
        self._fallback = fallback

    def _entry(self, check, c, seed):
        entry = self._entries.get(check.item_id(c))
        if entry is None:
            raise ReferenceFailure(f"no fixture for {check.item_id(c)}; record the fixtures again")
        if entry["seed"] != seed:
            raise ReferenceFailure(f"the fixtures were recorded with --seed {self.seed}; grade with that seed")
        return entry

    def given(self, check, c, seed: int):
        return self._entry(check, c, seed).get("given")

    def expected(self, check, c, seed: int):
        return self._entry(check, c, seed)["expected"]

    def misconception(self, misconception, check, c, seed: int):
        entry = self._entry(check, c, seed)
        if "misconceptions" not in entry and self._fallback is not None:
            return self._fallback.misconception(misconception, check, c, seed)
        return entry.get("misconceptions", {}).get(misconception.name, _CRASHED)


def record_fixtures(episodes, seed: int, path: Path, *, public_only: bool = False,
                    misconceptions: bool = True) -> int:
    """Runs the checks (and misconceptions) on ``solutions/`` and writes the results.

    Args:
        episodes: The episodes to record.
        seed: The session seed.
        path: Where to write.
        public_only: Record public checks only (a student release holds no hidden values).
        misconceptions: Also record the outputs of the misconception variants (for hints).

    Returns:
        int: The number of checks recorded.
    """
    from .registry import item_seed

    live = LiveReference()
    items = {}
    for ep in episodes:
        for ex in ep.exercises:
            for check in ex.checks:
                if public_only and check.hidden:
                    continue
                for c in check.cases:
                    s = item_seed(seed, check.item_id(c))
                    entry = {"seed": s, "given": live.given(check, c, s), "expected": live.expected(check, c, s)}
                    if misconceptions:
                        outputs = {m.name: live.misconception(m, check, c, s) for m in ex.misconceptions}
                        entry["misconceptions"] = {k: v for k, v in outputs.items() if v is not _CRASHED}
                    items[check.item_id(c)] = entry
    Path(path).write_bytes(encode({"seed": seed, "public_only": public_only, "items": items}))
    return len(items)


def is_crashed(result) -> bool:
    return result is _CRASHED
