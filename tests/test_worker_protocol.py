"""One probe request per episode: the worker answers a run of checks one by one, and a grader that
stops early (a submission past its time limit, ``-x``) leaves no answer behind for the next one."""

from __future__ import annotations

from conftest import copy_solutions

from autograder import registry, sandbox
from autograder.plugin import Grader, worker_config
from autograder.reference import LiveReference
from autograder.worker import Worker

SEED = 5
NO_SCALE = "/ math.sqrt(q.shape[-1])"


def _checks(episode_id: str) -> list:
    return [(chk, c) for ex in registry.load_episode(episode_id).exercises for chk in ex.checks for c in chk.cases]


def test_a_grader_that_stops_early_leaves_no_answer_for_the_next(tmp_path):
    wrong = copy_solutions(tmp_path / "wrong")
    path = wrong / "ep05_self_attention.py"
    path.write_text(path.read_text().replace(NO_SCALE, ""))
    right = copy_solutions(tmp_path / "right")
    worker = Worker(worker_config("auto", sandbox.DEFAULT_MEMORY, [], ["ep05"]))
    reference = LiveReference()
    try:
        first = Grader("wrong", wrong, SEED, 10.0, reference, worker=worker)
        first.selected = _checks("ep05")
        assert first.grade(*first.selected[0]).status == "failed"  # the run's other answers are still owed
        first.close()
        second = Grader("right", right, SEED, 10.0, reference, worker=worker)
        second.selected = _checks("ep05")
        records = [second.grade(chk, c) for chk, c in second.selected]
        second.close()
    finally:
        worker.close()
    assert len(records) > 10 and all(r.passed for r in records), [r.message for r in records if r.message]


def _statuses(target, order) -> dict:
    grader = Grader("wrong", target, SEED, 10.0, LiveReference(), episodes=["ep04", "ep05"])
    try:
        grader.selected = _checks("ep04") + _checks("ep05")
        records = [grader.grade(chk, c) for chk, c in order(grader.selected)]
    finally:
        grader.close()
    # the status and the diagnosis (blame's opening line depends on what was graded before: left out)
    return {r.id: (r.status, r.message.split("\n")[-1]) for r in records}


def test_checks_graded_out_of_order_get_their_own_answers(tmp_path):
    """pytest may run a check that is not next in the run; it is asked for on its own, and the
    answers read ahead for the others are kept for their turn."""
    wrong = copy_solutions(tmp_path / "wrong")
    path = wrong / "ep05_self_attention.py"
    path.write_text(path.read_text().replace(NO_SCALE, ""))
    in_order = _statuses(wrong, list)
    shuffled = _statuses(wrong, lambda selected: selected[::-1][:7] + selected[::2] + selected[1::2])
    assert {status for status, _ in in_order.values()} == {"passed", "failed"}
    assert shuffled == in_order
