"""Every misconception variant loses points on its exercise, and its hint is shown.

This is the proof that no check is vacuous: for each named buggy variant the
exercise's checks are run in-process on the reference with that one part
replaced, and at least one check must fail and name the mistake.

The default seed is the one students grade with. Instructors grade hidden
checks with other seeds: ``DSGRADE_TEST_SEEDS=1,2,3 pytest tests/test_misconceptions.py``
repeats every test for those seeds too.
"""

import os

import pytest

from autograder import registry
from autograder.grading import grade_locally
from autograder.probing import variant
from autograder.reference import LiveReference

SEEDS = [1234] + [int(s) for s in os.environ.get("DSGRADE_TEST_SEEDS", "").split(",") if s.strip()]
REFERENCE = LiveReference()
MISCONCEPTIONS = [m for ep in registry.all_episodes() for ex in ep.exercises for m in ex.misconceptions]


def _module(episode):
    import importlib

    return importlib.import_module(f"solutions.{episode.module}")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("m", MISCONCEPTIONS, ids=lambda m: f"{m.exercise.id}:{m.name}")
def test_misconception_loses_points_and_gets_its_hint(m, seed):
    module = _module(m.exercise.episode)
    impl = variant(module, m.exercise.name, m.build(module))
    records = grade_locally(m.exercise, impl, REFERENCE, seed)
    failed = [r for r in records if not r.passed]
    assert failed, f"{m.exercise.id}: misconception {m.name!r} passes every check"
    assert sum(r.points for r in records) < m.exercise.max_score
    assert any(m.hint in r.hint for r in failed), f"{m.name}: its hint is never shown"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("exercise", [ex for ep in registry.all_episodes() for ex in ep.exercises],
                         ids=lambda ex: ex.id)
def test_reference_passes_in_process_and_has_checks(exercise, seed):
    records = grade_locally(exercise, _module(exercise.episode), REFERENCE, seed)
    assert records and all(r.passed for r in records), [r.message for r in records if not r.passed]
    assert any(c.hidden for c in exercise.checks) and any(not c.hidden for c in exercise.checks)


def test_exercises_with_realistic_mistakes_have_two_misconceptions():
    few = [ex.id for ep in registry.all_episodes() for ex in ep.exercises if len(ex.misconceptions) < 2]
    assert not few, f"exercises with fewer than two misconceptions: {few}"


# Mistakes whose numbers once coincided with another mistake's on some case, so that a hint that does not
# describe them was shown (e.g. "multiply by cfg.n_layers" for bytes_per_element ignored, with 2 layers and
# 2 bytes): the cases are now chosen so that each gets only its own hint.
NOT_MISLEADING = [
    ("ep01.kv_cache_bytes", "elements_not_bytes", ["keys_only", "one_layer", "one_sequence"]),
    ("ep01.kv_cache_bytes", "keys_only", ["one_layer", "one_sequence", "elements_not_bytes"]),
    ("ep10.kv_cache_elements_per_token", "keys_only", ["one_layer"]),
    ("ep17.mla_cache_bytes_per_token", "elements_not_bytes", ["one_layer", "per_head", "latent_only"]),
    ("ep17.mla_cache_bytes_per_token", "bytes_per_element_ignored", ["one_layer", "per_head", "latent_only"]),
    ("ep20.expert_balance_loss", "alpha_ignored", ["k_missing"]),
    ("ep20.sequence_balance_loss", "alpha_ignored", ["summed_over_batch"]),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("exercise_id, mistake, others", NOT_MISLEADING, ids=lambda v: v if isinstance(v, str) else "")
def test_hints_of_other_mistakes_are_not_shown(exercise_id, mistake, others, seed):
    m = next(m for m in MISCONCEPTIONS if m.exercise.id == exercise_id and m.name == mistake)
    module = _module(m.exercise.episode)
    records = grade_locally(m.exercise, variant(module, m.exercise.name, m.build(module)), REFERENCE, seed)
    hints = {o.name: o.hint for o in m.exercise.misconceptions if o.name in others}
    assert len(hints) == len(others), f"unknown misconceptions in {others}"
    shown = {name for r in records for name, hint in hints.items() if hint in r.hint}
    assert not shown, f"{exercise_id}: {mistake!r} is shown the hints of {sorted(shown)}"

