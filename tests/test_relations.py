"""The relation detectors: each names its relation on a realistic wrong implementation, graded by the
real checks, and stays silent on correct code and on unrelated values."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from autograder import registry
from autograder.grading import grade_locally
from autograder.probing import variant
from autograder.reference import LiveReference
from autograder.relations import describe
from autograder.values import to_plain

REFERENCE = LiveReference()


def _solutions(episode_id: str):
    return importlib.import_module(f"solutions.{registry.load_episode(episode_id).module}")


def _exercise(exercise_id: str):
    ep, name = exercise_id.split(".")
    return next(ex for ex in registry.load_episode(ep).exercises if ex.name == name)


def _misconception(exercise_id: str, name: str):
    ex = _exercise(exercise_id)
    module = _solutions(ex.episode.id)
    m = next(m for m in ex.misconceptions if m.name == name)
    return variant(module, ex.name, m.build(module))


def _negated_cross_entropy():
    module = _solutions("ep03")
    return variant(module, "cross_entropy", lambda logits, targets: -module.cross_entropy(logits, targets))


def _rope_left_in_half_layout():
    """Rotates correctly, then hands back the result in the half-split layout (never permuted back)."""
    module = _solutions("ep16")

    def apply_rope(x, freqs_cis):
        d = x.shape[-1]
        return module.apply_rope(x, freqs_cis)[..., torch.cat([torch.arange(0, d, 2), torch.arange(1, d, 2)])]
    return variant(module, "apply_rope", apply_rope)


# detector → (exercise, a wrong implementation of it, what the message must say)
WRONG = {
    "factor": ("ep20.switch_load_balancing_loss", lambda: _misconception("ep20.switch_load_balancing_loss", "missing_n"),
               "equals the expected result × 1/"),
    "sign": ("ep03.cross_entropy", _negated_cross_entropy, "sign flipped"),
    "axes": ("ep16.precompute_freqs_cis", lambda: _misconception("ep16.precompute_freqs_cis", "transposed"),
             "axes (0, 1) in another order"),
    "pairs": ("ep16.apply_rope", _rope_left_in_half_layout, "interleaved pairs (x[2i], x[2i+1]) versus halves"),
    "shift": ("ep15.sinusoidal_positional_encoding",
              lambda: _misconception("ep15.sinusoidal_positional_encoding", "positions_from_1"),
              "shifted by one along axis 0"),
    "prefix": ("ep13.MultiHeadLatentAttention",
               lambda: _misconception("ep13.MultiHeadLatentAttention", "ignores_start_pos"), "right for the first"),
    "precision": ("ep02.rms_norm", lambda: _misconception("ep02.rms_norm", "always_float32"),
                  "right to float32 precision only"),
    "dtype": ("ep02.rms_norm", lambda: _misconception("ep02.rms_norm", "no_cast_back"),
              "the values are right; only the dtype is wrong (float32, expected bfloat16)"),
}


@pytest.mark.parametrize("detector", WRONG)
def test_each_detector_names_its_relation_on_a_wrong_implementation(detector):
    exercise_id, make, sentence = WRONG[detector]
    records = grade_locally(_exercise(exercise_id), make(), REFERENCE, 1234)
    failed = [r for r in records if not r.passed]
    assert failed, f"{detector}: the wrong implementation passes"
    assert any(sentence in r.message for r in failed), [r.message for r in failed][:3]


@pytest.mark.parametrize("exercise_id", sorted({e for e, _, _ in WRONG.values()}))
def test_no_detector_fires_on_the_reference(exercise_id):
    ex = _exercise(exercise_id)
    records = grade_locally(ex, _solutions(ex.episode.id), REFERENCE, 1234)
    assert all(r.passed and "looks like" not in r.message for r in records)


def test_no_relation_is_claimed_for_unrelated_or_equal_values():
    gen = np.random.default_rng(0)
    e = torch.tensor(gen.standard_normal((3, 6, 8)))
    for got in (e, e + 1e-12, torch.tensor(gen.standard_normal((3, 6, 8))), e + 1.0, e * torch.linspace(0.5, 2, 8)):
        assert describe(to_plain(e), to_plain(got)) is None, got.flatten()[:3]
    one, other = to_plain(torch.tensor([1.37])), to_plain(torch.tensor([4.21]))
    assert describe(one, other) is None, "any two numbers are multiples of each other: say nothing"


def test_parts_that_agree_get_no_relation_even_when_symmetric():
    """A stage that matches is left alone, though its transpose would match too (a size-1 axis)."""
    from autograder.relations import relations

    e = torch.randn(2, 1, 1, 4, dtype=torch.float64)
    expected = {"rope": to_plain(e), "moe": to_plain(e)}
    got = {"rope": to_plain(e), "moe": to_plain(2 * e)}
    assert relations(expected, got) == ["moe: equals the expected result × 2 everywhere: a scale factor is wrong or missing"]


def test_a_hidden_check_gets_the_relation_without_a_number_from_the_expected_values():
    e = to_plain(torch.randn(3, 4, dtype=torch.float64))
    odd = to_plain(0.3742 * torch.tensor(e.data))
    assert "× 0.3742" in describe(e, odd)
    shown = describe(e, odd, hidden=True)
    assert "times a constant" in shown and "0.37" not in shown
    assert "× 1/2 " in describe(e, to_plain(torch.tensor(e.data) / 2), hidden=True)  # a familiar factor: a hint
