"""Blame the dependency: when an earlier exercise is wrong, the dependent's report names it, drops its own
misleading hints, and "Next, fix …" points at it (through ``dsgrade``, as a student sees it)."""

from __future__ import annotations

import re

from conftest import copy_solutions, dsgrade


def _with(tmp_path, module: str, old: str, new: str):
    sub = copy_solutions(tmp_path / "sub")
    path = sub / f"{module}.py"
    source = path.read_text()
    assert old in source, old
    path.write_text(source.replace(old, new))
    return sub


def _exercise(report: dict, exercise_id: str) -> dict:
    return next(ex for ex in report["exercises"] if ex["id"] == exercise_id)


def test_a_wrong_function_is_blamed_with_the_call_that_went_wrong(tmp_path):
    sub = _with(tmp_path, "ep06_causal_attention", "triu(diagonal=s - t + 1)", "triu(diagonal=s - t)")
    run = dsgrade("ep06", "--target", str(sub), json_path=tmp_path / "r.json")
    attention = _exercise(run.report, "ep06.causal_attention")
    failing = [c for c in attention["checks"] if not c["passed"]]
    assert failing and all(c["blame"] == "ep06.causal_mask" for c in failing)
    assert re.match(r"your ep06\.causal_attention called your ep06\.causal_mask\(\d+, \d+\), whose result "
                    r"differs from the reference \(.*\): fix ep06\.causal_mask first", failing[0]["message"])
    case = failing[0]["id"].split("::")[1]
    assert all(c["message"].startswith("your ep06.causal_attention calls your ep06.causal_mask, whose result differs "
                                       f"from the reference (see {case}): fix ep06.causal_mask first")
               for c in failing[1:])  # one verdict, shown once, serves the other checks
    assert all(c["hint"] == "" for c in failing), "the dependent's own hints would mislead"
    assert re.search(r"Next, fix ep06\.causal_mask in .*ep06_causal_attention\.py:\d+", run.out)


def test_a_function_called_with_a_config_is_blamed(tmp_path):
    sub = _with(tmp_path, "ep17_mla_rope", "scale = cfg.qk_head_dim ** -0.5", "scale = cfg.qk_nope_head_dim ** -0.5")
    run = dsgrade("ep17", "--target", str(sub), json_path=tmp_path / "r.json")
    mla = _exercise(run.report, "ep17.MLA")
    blamed = [c for c in mla["checks"] if c["blame"] == "ep17.mla_softmax_scale"]
    assert blamed and "called your ep17.mla_softmax_scale(DeepSeekConfig(…))" in blamed[0]["message"]
    assert not any("self.softmax_scale" in c["hint"] for c in mla["checks"])
    assert "Next, fix ep17.mla_softmax_scale" in run.out


def test_a_class_that_fails_its_own_checks_is_named(tmp_path):
    sub = _with(tmp_path, "ep09_kv_cache", "            k, v = cache.update(k, v)\n", "            cache.update(k, v)\n")
    run = dsgrade("ep09", "--target", str(sub), json_path=tmp_path / "r.json")
    step = _exercise(run.report, "ep09.make_step_fn")
    assert step["score"] == 0
    assert all("your ep09.make_step_fn uses your ep09.CachedMultiHeadAttention, which fails its own checks" in c["message"]
               for c in step["checks"])
    assert "Next, fix ep09.CachedMultiHeadAttention" in run.out


def test_the_stage_that_breaks_the_block_is_where_to_go_next(tmp_path):
    sub = _with(tmp_path, "ep19_moe", "return (routed + self.shared_experts(tokens)).view(x.shape)",
                "return routed.view(x.shape)")
    run = dsgrade("capstone.DeepSeekBlock", "--target", str(sub), json_path=tmp_path / "r.json")
    block = _exercise(run.report, "capstone.DeepSeekBlock")
    assert any(c["blame"] == "ep19.MoE" for c in block["checks"])
    assert "Next, fix ep19.MoE in" in run.out and "(your capstone.DeepSeekBlock depends on it)" in run.out


def test_every_unimplemented_dependency_is_named_and_the_first_is_where_to_start(tmp_path):
    run = dsgrade("capstone.DeepSeekBlock", json_path=tmp_path / "r.json")  # the stubs
    block = _exercise(run.report, "capstone.DeepSeekBlock")
    message = block["checks"][0]["message"]
    assert message.startswith("uses ep02.RMSNorm, ep02.MLP, ep17.MLA and ep19.MoE, which are not implemented yet "
                              "(start with ep02.RMSNorm)"), message
    assert re.search(r"Start with ep02\.RMSNorm in exercises/ep02_building_blocks\.py:\d+ \(your "
                     r"capstone\.DeepSeekBlock depends on it\)", run.out)


def test_a_dependency_not_handed_in_is_named_as_a_missing_file(tmp_path):
    """A submission of episode 6 alone (a per-episode Gradescope assignment): its attention uses episode 5's,
    which the grader took from the handed-out stub. The student is told to hand the file in, not to write it."""
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "ep06_causal_attention.py").write_text((copy_solutions(tmp_path / "all") / "ep06_causal_attention.py")
                                                  .read_text())
    run = dsgrade("ep06", "--target", str(sub), json_path=tmp_path / "r.json")
    attention = _exercise(run.report, "ep06.causal_attention")
    assert attention["score"] == 0
    assert all(c["message"] == "uses ep05.scaled_dot_product_attention, but ep05_self_attention.py is not in this "
                               "submission (the stubs handed out were used): hand in that file with this one"
               for c in attention["checks"]), attention["checks"][0]["message"]
    assert _exercise(run.report, "ep06.causal_mask")["score"] > 0
