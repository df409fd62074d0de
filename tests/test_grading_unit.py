"""grading.evaluate on hand-made checks: statuses, hints, stage naming."""

import torch

from autograder.grading import evaluate
from autograder.registry import Episode, case
from autograder.values import to_plain


class FakeReference:
    """A reference whose expected output and misconception outputs are given."""

    def __init__(self, expected, misconceptions=None):
        self._expected, self._mis = to_plain(expected), {k: to_plain(v) for k, v in (misconceptions or {}).items()}

    def given(self, check, c, seed):
        return None

    def expected(self, check, c, seed):
        return self._expected

    def misconception(self, m, check, c, seed):
        return self._mis[m.name]


def _exercise(stages=False):
    ep = Episode("ep99", "test", "", "ep99_test")
    ex = ep.exercise("f")
    ex.check(case(n=1), points=2, stages=stages)(lambda impl, c, gen: None)
    return ex


def test_statuses_and_points():
    ex = _exercise()
    check, c = ex.checks[0], ex.checks[0].cases[0]
    ref = FakeReference(torch.ones(3))
    assert evaluate(check, c, 0, {"status": "ok", "result": to_plain(torch.ones(3))}, ref).points == 2
    failed = evaluate(check, c, 0, {"status": "ok", "result": to_plain(torch.zeros(3))}, ref)
    assert failed.status == "failed" and failed.points == 0 and "values differ" in failed.message
    stub = evaluate(check, c, 0, {"status": "not_implemented", "message": "x"}, ref)
    assert stub.status == "not_implemented" and stub.points == 0


def test_a_matching_misconception_gives_its_hint_and_others_do_not():
    ex = _exercise()
    ex.misconception("doubled", "you doubled it")(lambda x: x)
    ex.misconception("negated", "you negated it")(lambda x: x)
    check, c = ex.checks[0], ex.checks[0].cases[0]
    ref = FakeReference(torch.ones(3), {"doubled": 2 * torch.ones(3), "negated": -torch.ones(3)})
    record = evaluate(check, c, 0, {"status": "ok", "result": to_plain(2 * torch.ones(3))}, ref)
    assert record.hint == "you doubled it"


def test_stage_checks_name_the_first_differing_stage():
    ex = _exercise(stages=True)
    check, c = ex.checks[0], ex.checks[0].cases[0]
    ref = FakeReference({"ep02.RMSNorm": torch.ones(2), "ep16.apply_rope": torch.ones(2), "ep17.MLA": torch.ones(2)})
    got = {"ep02.RMSNorm": torch.ones(2), "ep16.apply_rope": torch.zeros(2), "ep17.MLA": torch.zeros(2)}
    record = evaluate(check, c, 0, {"status": "ok", "result": to_plain(got)}, ref)
    assert record.message.startswith("first differing stage: ep16.apply_rope (the stages before it match)")
