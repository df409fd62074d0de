"""End to end through ``dsgrade``: solutions, stubs, broken and hostile submissions, exit codes."""

from __future__ import annotations

import re

from conftest import copy_solutions, dependents, dsgrade, module_of

from autograder import registry


def _by_id(report: dict, key: str) -> dict:
    return {e["id"]: e for e in report[key]}


def test_solutions_get_full_marks(solutions_report):
    assert solutions_report["score"] == solutions_report["max_score"] > 0
    assert {e["id"] for e in solutions_report["episodes"]} == set(registry.episode_ids())
    for ex in solutions_report["exercises"]:
        assert ex["status"] == "passed", ex


def test_stubs_score_zero_and_point_to_the_first_exercise(stubs_run):
    report = stubs_run.report
    assert stubs_run.code == 1
    assert report["score"] == 0 and report["max_score"] > 0
    assert {ex["status"] for ex in report["exercises"]} == {"not_implemented"}
    assert "\x1b[" not in stubs_run.out, "no colour codes when the output is not a terminal"
    first = registry.all_episodes()[0].exercises[0]
    assert re.search(rf"Start with {re.escape(first.id)} in exercises/{first.episode.module}\.py:\d+", stubs_run.out)


def test_max_scores_match_the_registry(solutions_report):
    for ep in registry.all_episodes():
        assert _by_id(solutions_report, "episodes")[ep.id]["max_score"] == ep.max_score


BROKEN = {
    "crash_at_import": "raise RuntimeError('boom at import')\n",
    "hang": "while True:\n    pass\n",
    "syntax_error": "def broken(:\n    return 1\n",
    "os_exit": "import os\nos._exit(3)\n",
}


def test_broken_submission_is_graded_and_the_rest_gets_full_marks(tmp_path):
    sub = copy_solutions(tmp_path / "sub")
    episodes = registry.episode_ids()
    leaves = [ep for ep in episodes if not dependents({module_of(ep)})] or episodes
    chosen = dict(zip(BROKEN, (leaves * 4)[:4]))  # one episode per kind of breakage
    if len(set(chosen.values())) < 4:  # fewer leaf episodes than kinds: one kind per episode
        chosen = dict(zip(BROKEN, episodes[:4]))
    for kind, ep in chosen.items():
        (sub / f"{module_of(ep)}.py").write_text(BROKEN[kind])
    run = dsgrade("--target", str(sub), "--timeout", "2", json_path=tmp_path / "r.json")
    assert run.code == 1, run.err
    report = run.report
    episodes_by_id = _by_id(report, "episodes")
    assert set(episodes_by_id) == set(episodes), "the report must cover every episode"
    expected_status = {"crash_at_import": "error", "hang": "timeout", "syntax_error": "error", "os_exit": "error"}
    expected_text = {"crash_at_import": "RuntimeError: boom at import", "hang": "timed out after 2 s",
                     "syntax_error": "SyntaxError", "os_exit": "died (exit code 3)"}
    broken_modules = {module_of(ep) for ep in chosen.values()}
    affected = broken_modules | dependents(broken_modules)
    for kind, ep in chosen.items():
        assert episodes_by_id[ep]["status"] == expected_status[kind], (kind, episodes_by_id[ep])
        for ex in report["exercises"]:
            if ex["episode"] == ep:
                assert all(expected_text[kind] in c["message"] for c in ex["checks"]), (kind, ex["checks"][0])
    for ep in episodes:
        if module_of(ep) not in affected:
            assert episodes_by_id[ep]["score"] == episodes_by_id[ep]["max_score"], ep
    assert "importing" in run.out  # one line per broken module, not per check


HOSTILE = '''
import sys, numpy, torch
from .{module} import *          # keep every correct definition
from . import {module} as _good

torch.allclose = lambda *a, **k: True                 # try to fool a comparison in this process
numpy.allclose = lambda *a, **k: True
torch.Tensor.__eq__ = lambda self, other: torch.ones((), dtype=torch.bool)
print("garbage on stdout " * 100)                     # must not corrupt the protocol


class Liar(torch.Tensor):
    def numpy(self, *a, **k):                         # claims other values when read naively
        return numpy.zeros(tuple(self.shape), dtype=numpy.float32)


def {name}(*args, **kwargs):
    out = getattr(_good, "{name}")(*args, **kwargs)
    return [o.as_subclass(Liar) if isinstance(o, torch.Tensor) else o for o in out] if isinstance(out, tuple) \\
        else out.as_subclass(Liar)
'''


def test_hostile_code_cannot_influence_grading(tmp_path):
    """Monkeypatching torch/numpy, printing to stdout and returning a lying tensor subclass change nothing."""
    sub = copy_solutions(tmp_path / "sub")
    ep = registry.load_episode("ep05")
    good = sub / "ep05_good.py"
    (sub / f"{ep.module}.py").rename(good)
    name = "scaled_dot_product_attention"
    (sub / f"{ep.module}.py").write_text(HOSTILE.format(module="ep05_good", name=name))
    run = dsgrade("ep05", "--target", str(sub), json_path=tmp_path / "r.json")
    exercises = _by_id(run.report, "exercises")
    assert exercises[f"ep05.{name}"]["status"] == "passed", exercises[f"ep05.{name}"]

    # The same hostility around a *wrong* function: it must still fail.
    wrong = HOSTILE.format(module="ep05_good", name=name).replace(
        "out = getattr(_good", "args = args[:2] + (args[2] * 2,) + args[3:]\n    out = getattr(_good")
    (sub / f"{ep.module}.py").write_text(wrong)
    run = dsgrade("ep05", "--target", str(sub), json_path=tmp_path / "r2.json")
    assert _by_id(run.report, "exercises")[f"ep05.{name}"]["score"] == 0


def test_solutions_cannot_be_imported_by_the_target(tmp_path):
    sub = copy_solutions(tmp_path / "sub")
    ep = registry.load_episode("ep04")
    (sub / f"{ep.module}.py").write_text(f"from solutions.{ep.module} import *\n")
    run = dsgrade("ep04", "--target", str(sub), json_path=tmp_path / "r.json")
    messages = {c["message"] for ex in run.report["exercises"] for c in ex["checks"]}
    assert run.report["score"] == 0
    assert any("solutions package is not available" in m for m in messages), messages


def test_exits_and_interrupts_inside_a_check_become_errors(tmp_path):
    sub = copy_solutions(tmp_path / "sub")
    ep = registry.load_episode("ep04")
    source = (sub / f"{ep.module}.py").read_text()
    source += "\n\ndef attention_scores(x):\n    import sys\n    sys.exit(4)\n"
    source += "\n\ndef attention_weights(scores):\n    raise KeyboardInterrupt\n"
    source += "\n\ndef context_vectors(x):\n    return input()\n"
    (sub / f"{ep.module}.py").write_text(source)
    run = dsgrade("ep04", "--target", str(sub), json_path=tmp_path / "r.json")
    exercises = _by_id(run.report, "exercises")
    assert "sys.exit(4)" in exercises["ep04.attention_scores"]["checks"][0]["message"]
    assert "KeyboardInterrupt" in exercises["ep04.attention_weights"]["checks"][0]["message"]
    assert "EOFError" in exercises["ep04.context_vectors"]["checks"][0]["message"]  # stdin is /dev/null
    assert {ex["status"] for ex in exercises.values()} == {"error"}


def _ep04_with(tmp_path, definition: str):
    """A copy of the solutions whose ep04 re-exports the reference, with one function replaced."""
    sub = copy_solutions(tmp_path / "sub")
    module = registry.load_episode("ep04").module
    (sub / "ep04_good.py").write_text((sub / f"{module}.py").read_text())
    (sub / f"{module}.py").write_text("from .ep04_good import *\nfrom . import ep04_good as _good\n\n" + definition)
    return sub


def test_a_crash_mid_check_restarts_the_worker(tmp_path):
    sub = _ep04_with(tmp_path, "def attention_scores(x):\n    if x.shape[0] == 2:  # the first case only\n"
                               "        import os\n        os._exit(9)\n    return _good.attention_scores(x)\n")
    run = dsgrade("ep04.attention_scores", "--target", str(sub), json_path=tmp_path / "r.json")
    checks = _by_id(run.report, "exercises")["ep04.attention_scores"]["checks"]
    assert "died (exit code 9)" in checks[0]["message"]
    assert checks[1]["passed"], "the check after the crash runs in a fresh worker"
    assert _by_id(run.report, "exercises")["ep04.attention_scores"]["status"] == "partial"


def test_a_slow_check_times_out_and_grading_goes_on(tmp_path):
    sub = _ep04_with(tmp_path, "def attention_weights(scores):\n    while scores.shape[0] == 2:  # the first case only\n"
                               "        pass\n    return _good.attention_weights(scores)\n")
    run = dsgrade("ep04.attention_weights", "--target", str(sub), "--timeout", "1", json_path=tmp_path / "r.json")
    checks = _by_id(run.report, "exercises")["ep04.attention_weights"]["checks"]
    assert checks[0]["status"] == "timeout" and "timed out after 1 s" in checks[0]["message"]
    assert all(c["passed"] for c in checks if c["status"] != "timeout"), "grading went on in a fresh worker"
    assert sum(c["passed"] for c in checks) >= len(checks) - 3


def test_a_missing_episode_file_is_reported(tmp_path):
    sub = copy_solutions(tmp_path / "sub")
    ep = registry.load_episode("ep04")
    (sub / f"{ep.module}.py").unlink()
    run = dsgrade("ep04", "--target", str(sub), json_path=tmp_path / "r.json")
    message = run.report["exercises"][0]["checks"][0]["message"]
    assert f"{ep.module}.py is not in" in message
