"""The capstone: conventions of the reference block and model, its checks, and the broken-part report.

The conventions are checked on the reference (in-process, float32). The grading: the solutions get full
marks and the stubs 0; teacher forcing hands every stage the reference's input of that stage; a wrong
block or model forward is named as the wiring stage; and a submission that is the solutions with *one*
part broken (in its own episode's file), graded through ``dsgrade --target … capstone --json``, gets a
capstone report whose stage checks all name that part as the first differing stage. Parity with
transformers and DeepSeek-V3's own code is in ``test_parity_block.py``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import copy_solutions, dsgrade

from autograder import registry
from autograder.authoring import regions
from autograder.checks import capstone as checks
from autograder.grading import grade_locally
from autograder.probing import load_weights, variant
from autograder.reference import LiveReference
from autograder.registry import case
from solutions import capstone
from solutions.config import tiny
from solutions.ep02_building_blocks import MLP
from solutions.ep09_kv_cache import generate_greedy
from solutions.ep16_rope import freqs_cis_from_config
from solutions.ep19_moe import MoE

YARN = checks.YARN  # episode 17's: YaRN on in the tiny model


def model(seed=7, **overrides):
    return load_weights(capstone.TinyDeepSeek(tiny(**overrides)), seed)


def token_ids(b, t, seed=0, vocab=97):
    return torch.randint(vocab, (b, t), generator=torch.Generator().manual_seed(seed))


# --- conventions of the reference ------------------------------------------------------------------


@pytest.mark.parametrize("layer_id, dense", [(0, True), (1, False), (2, False)])
def test_block_names_and_ffn_follow_deepseek(layer_id, dense):
    block = capstone.DeepSeekBlock(layer_id, tiny())  # n_dense_layers = 1
    assert isinstance(block.ffn, MLP if dense else MoE) and (type(block.ffn) is MLP) == dense
    names = {name.split(".")[0] for name, _ in block.named_parameters()}
    assert names == {"attn", "ffn", "attn_norm", "ffn_norm"}
    if dense:
        assert block.ffn.w1.weight.shape == (tiny().inter_dim, tiny().dim)


def test_model_names_rope_table_and_logits_follow_deepseek():
    cfg = tiny()
    m = capstone.TinyDeepSeek(cfg)
    assert {name.split(".")[0] for name, _ in m.named_parameters()} == {"embed", "layers", "norm", "head"}
    assert len(m.layers) == cfg.n_layers and m.head.weight.shape == (cfg.vocab_size, cfg.dim)
    assert torch.equal(m.freqs_cis, freqs_cis_from_config(cfg)) and "freqs_cis" not in m.state_dict()
    yarn = capstone.TinyDeepSeek(tiny(**YARN))
    assert not torch.allclose(yarn.freqs_cis, m.freqs_cis)  # YaRN stretches the table when enabled
    out = model()(token_ids(2, 5))
    assert out.shape == (2, 5, cfg.vocab_size) and out.dtype == torch.float32


@pytest.mark.parametrize("t, start_pos", [(1, 0), (1, 6), (4, 0), (3, 5)])
def test_additive_mask_is_deepseeks_for_a_prompt_and_offset_after_a_cache(t, start_pos):
    mask = capstone.additive_causal_mask(t, start_pos)
    if t == 1:
        assert mask is None
        return
    assert mask.shape == (t, start_pos + t) and mask.dtype == torch.float32
    if start_pos == 0:  # DeepSeek-V3's Transformer.forward
        assert torch.equal(mask, torch.full((t, t), float("-inf")).triu_(1))
    for i in range(t):  # new token i sits at start_pos + i
        assert (mask[i, :start_pos + i + 1] == 0).all() and (mask[i, start_pos + i + 1:] == float("-inf")).all()


def test_later_tokens_do_not_change_earlier_logits():
    m, ids = model(), token_ids(2, 6)
    changed = ids.clone()
    changed[:, 3:] = (changed[:, 3:] + 1) % 97
    with torch.no_grad():  # equal up to float32 rounding: the experts see other batches of tokens
        torch.testing.assert_close(m(changed)[:, :3], m(ids)[:, :3], atol=1e-6, rtol=1e-6)
        assert not torch.allclose(m(changed)[:, 3:], m(ids)[:, 3:], atol=1e-2)


@pytest.mark.parametrize("overrides", [{}, {"q_lora_rank": 0}, YARN], ids=["q_lora", "no_q_lora", "yarn"])
@pytest.mark.parametrize("bounds", [(4, 5, 6, 7), (3, 5, 7)], ids=["one_token_steps", "chunks_of_2"])
def test_cached_decoding_equals_the_full_forward(overrides, bounds):
    ids = token_ids(2, 7, seed=3)
    with torch.no_grad():
        full = model(**overrides)(ids)
        m = model(**overrides)
        starts = (0, *bounds[:-1])
        cached = torch.cat([m(ids[:, s:e], s) for s, e in zip(starts, bounds)], dim=1)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("overrides", [{}, {"score_func": "softmax", "gate_bias": False}], ids=["v3", "v2_gate"])
def test_generate_equals_greedy_decoding_without_a_cache(overrides):
    """Episode 9's generate_greedy re-runs the whole sequence every step (fresh positions, no reuse)."""
    m, prompt = model(**overrides), token_ids(3, 4, seed=5)
    with torch.no_grad():
        expected = generate_greedy(lambda ids: m(ids, 0), prompt, 8)
    got = m.generate(prompt, 8)
    assert got.dtype == torch.int64 and torch.equal(got, expected)
    assert len(set(got[:, 4:].flatten().tolist())) > 2  # the case is not a constant token
    assert torch.equal(m.generate(prompt, 0), prompt)


def test_generate_prefills_once_then_feeds_one_token_at_its_position():
    m, calls = model(), []
    m.layers[1].register_forward_pre_hook(lambda module, args: calls.append((args[0].shape[1], args[1])))
    m.generate(token_ids(2, 3), 4)
    assert calls == [(3, 0), (1, 3), (1, 4), (1, 5)]


# --- the checks ----------------------------------------------------------------------------------


def test_capstone_is_the_final_exam():
    episode = registry.load_episode("capstone")
    assert episode.max_score >= 20
    assert {ex.name for ex in episode.exercises} == {"additive_causal_mask", "DeepSeekBlock", "TinyDeepSeek"}
    staged = [chk for ex in episode.exercises for chk in ex.checks if chk.stages]
    assert {chk.exercise.name for chk in staged} == {"DeepSeekBlock", "TinyDeepSeek"}
    assert any(chk.hidden for chk in staged) and any(not chk.hidden for chk in staged)
    cases = [c for ex in episode.exercises for chk in ex.checks for c in chk.cases]
    assert any(c.params.get("t") == 1 for c in cases)
    assert {c.params.get("q_lora_rank", tiny().q_lora_rank) > 0 for c in cases} == {True, False}
    assert {c.params.get("layer_id") for c in cases} >= {0, 1}  # dense and MoE blocks


def _given(setup, **params):
    c = case(**params)
    return c, setup(capstone, c, torch.Generator().manual_seed(1))


def test_every_stage_is_named_by_an_exercise_id():
    ids = {ex.id for ep in registry.all_episodes() for ex in ep.exercises}
    for setup, probe, params in [(checks.block_inputs, checks.stages, dict(b=2, t=5, layer_id=1)),
                                 (checks.block_inputs, checks.stages, dict(b=2, t=4, layer_id=0, prefill=2)),
                                 (checks.model_inputs, checks.model_stages, dict(b=2, t=5))]:
        c, given = _given(setup, **params)
        with torch.no_grad():
            names = list(probe(capstone, c, torch.Generator().manual_seed(2), given))
        assert all(name.split(" (")[0] in ids for name in names), names
        assert names[-1].startswith("capstone.")


@pytest.mark.parametrize("params", [dict(b=2, t=5, layer_id=1), dict(b=3, t=6, layer_id=0, prefill=4)],
                         ids=["moe_prompt", "dense_decoding"])
def test_each_stage_gets_the_references_input_of_that_stage(params):
    """On the reference, each stage's output is exactly the traced input of the next part."""
    c, given = _given(checks.block_inputs, **params)
    with torch.no_grad():
        out = checks.stages(capstone, c, torch.Generator(), given)
    ffn = "ep19.MoE (ffn)" if c.layer_id else "ep02.MLP (ffn)"
    for stage, traced in [("ep02.RMSNorm (attn_norm)", "attn_in"), ("ep17.MLA (attn)", "attn_out"),
                          ("ep02.RMSNorm (ffn_norm)", "ffn_in"), (ffn, "ffn_out")]:
        assert torch.equal(out[stage], given[traced]), stage
    torch.testing.assert_close(given["x"] + given["attn_out"], given["h"], atol=0, rtol=0)
    wiring = out["capstone.DeepSeekBlock (residuals)"]
    torch.testing.assert_close(wiring["output"], given["out"], atol=1e-6, rtol=0)
    assert torch.equal(wiring["attn_norm got"][0]["x"], given["x"])
    assert torch.equal(wiring["attn got"][0]["x"], given["attn_in"])


def test_teacher_forcing_records_the_references_rotations_and_restores_apply_rope():
    attention_module = sys.modules[type(capstone.DeepSeekBlock(1, tiny()).attn).__module__]
    original = attention_module.apply_rope
    c, given = _given(checks.block_inputs, b=2, t=6, layer_id=1, prefill=4)
    assert attention_module.apply_rope is original
    (q_pe, q_rows), (k_pe, k_rows) = given["rotations"]  # the queries, then the shared key
    r = tiny().qk_rope_head_dim
    assert q_pe.shape == (2, 2, tiny().n_heads, r) and k_pe.shape == (2, 2, 1, r)
    assert torch.equal(q_rows, given["freqs_cis"][4:6]) and torch.equal(k_rows, q_rows)
    assert given["x"].shape == given["h"].shape == (2, 2, tiny().dim) and given["prefix_attn_in"].shape[1] == 4


# --- grading: solutions, stubs, wiring mistakes, one broken part -------------------------------------

REFERENCE = LiveReference()


def _grade(module, exercises=None):
    """Grades the capstone module ``module`` in this process (trusted code only)."""
    return [r for ex in registry.load_episode("capstone").exercises if exercises in (None, ex.name)
            for r in grade_locally(ex, module, REFERENCE, 1234)]


def _stage_lines(messages):
    return [m.splitlines()[0] for m in messages if m.startswith("first differing stage")]


def test_solutions_get_full_marks_and_stubs_zero():
    """In-process; ``test_grading_e2e.py`` grades every episode, the capstone too, through ``dsgrade``."""
    assert all(r.passed for r in _grade(capstone))
    stubs = _grade(importlib.import_module("exercises.capstone"))
    assert {r.status for r in stubs} == {"not_implemented"} and sum(r.points for r in stubs) == 0


@pytest.mark.parametrize("exercise", ["additive_causal_mask", "DeepSeekBlock", "TinyDeepSeek"])
def test_every_check_needs_the_exercise_itself(exercise):
    """With every other part correct (the reference's, as in a notebook) and only this exercise a stub, no check
    gives a point: each one runs the student's own code for it."""
    def stub(*args, **kwargs):
        raise NotImplementedError(f"capstone.{exercise}")

    ex = next(e for e in registry.load_episode("capstone").exercises if e.name == exercise)
    if ex.method is None:
        impl = variant(capstone, exercise, stub)
    else:
        cls = getattr(capstone, exercise)
        methods = {name: stub for name in ("forward", "generate") if name in vars(cls)}
        impl = variant(capstone, exercise, type(f"{exercise}Stub", (cls,), methods))
    records = grade_locally(ex, impl, REFERENCE, 1234)
    assert {r.status for r in records} == {"not_implemented"}, [r.id for r in records if r.points]


@pytest.mark.parametrize("exercise, stage", [("DeepSeekBlock", "capstone.DeepSeekBlock ("),
                                             ("TinyDeepSeek", "capstone.TinyDeepSeek (forward)")])
def test_wiring_mistakes_are_named_as_the_wiring_stage(exercise, stage):
    """A wrong block (model) forward: every part matches on the reference's inputs, its own wiring differs."""
    ex = next(e for e in registry.load_episode("capstone").exercises if e.name == exercise)
    staged = dataclasses.replace(ex, checks=[chk for chk in ex.checks if chk.stages])
    for m in ex.misconceptions:
        records = grade_locally(staged, variant(capstone, exercise, m.build(capstone)), REFERENCE, 1234)
        named = _stage_lines(r.message for r in records if not r.passed)
        assert all(line.startswith(f"first differing stage: {stage}") for line in named), (m.name, named)
        if m.method is None and m.name != "rope_rows_from_zero":  # that one needs start_pos > 0: not in stages
            assert named, f"{m.name}: no stage check names it"


NO_EPS = """
wide = torch.promote_types(x.dtype, torch.float32)
xw = x.to(wide)
return (xw * torch.rsqrt(xw.pow(2).mean(dim=-1, keepdim=True)) * weight.to(wide)).to(x.dtype)
"""
NO_SHARED_EXPERT = """
tokens = x.reshape(-1, self.dim)
weights, indices = self.gate(tokens)
routed = torch.zeros_like(tokens)
for e in range(len(self.experts)):
    token, slot = torch.where(indices == e)
    routed.index_add_(0, token, self.experts[e](tokens[token]) * weights[token, slot].unsqueeze(-1))
return routed.view(x.shape)
"""
POSITIONS_FROM_1 = """
freqs = rope_frequencies(head_dim, base) if freqs is None else freqs
angles = torch.outer(torch.arange(1, seq_len + 1, dtype=torch.float32), freqs)
return torch.polar(torch.ones_like(angles), angles)
"""
GATE_WITHOUT_BIAS = """
scores = router_scores(x, self.weight, self.score_func)
choice = self.limit_to_groups(scores) if self.n_groups > 1 else scores
indices = choice.topk(self.topk, dim=-1).indices
weights = scores.gather(-1, indices)
if self.score_func == "sigmoid":
    weights = weights / weights.sum(dim=-1, keepdim=True)
return (weights * self.route_scale).type_as(x), indices
"""
# name: (module, top-level def/class whose first solution region is replaced, new body, the part to name)
BROKEN = {
    "rope_half_split": ("ep16_rope", "apply_rope", "return apply_rope_half(x, freqs_cis.real, freqs_cis.imag)",
                        "ep16.apply_rope"),
    "rms_norm_without_eps": ("ep02_building_blocks", "rms_norm", NO_EPS, "ep02.RMSNorm"),
    "moe_without_shared_expert": ("ep19_moe", "MoE", NO_SHARED_EXPERT, "ep19.MoE"),
    "mla_scale_without_rope_dims": ("ep17_mla_rope", "mla_softmax_scale", "return cfg.qk_nope_head_dim ** -0.5",
                                    "ep17.MLA"),
    "rope_positions_from_1": ("ep16_rope", "precompute_freqs_cis", POSITIONS_FROM_1, "ep16.freqs_cis_from_config"),
}
# More parts, graded in this process (the same checks and messages, without dsgrade's subprocesses).
BROKEN_IN_PROCESS = {
    "rms_norm_in_bfloat16": ("ep02_building_blocks", "rms_norm",
                             "return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight", "ep02.RMSNorm"),
    "gate_without_bias": ("ep19_moe", "Gate", GATE_WITHOUT_BIAS, "ep19.Gate"),
    "mlp_gate_and_up_swapped": ("ep02_building_blocks", "MLP", "return self.w2(silu(self.w3(x)) * self.w1(x))",
                                "ep02.MLP"),
}


def broken_submission(folder, name, broken):
    """A copy of the solutions in ``folder/name`` with the first solution region of one part replaced."""
    module, owner, body, _ = broken[name]
    sub = copy_solutions(folder / name)
    path = sub / f"{module}.py"
    text = path.read_text()
    begin, end = next((b, e) for b, e, o in regions(text) if o == owner)
    lines = text.splitlines(keepends=True)
    indent = lines[begin][:len(lines[begin]) - len(lines[begin].lstrip())]
    lines[begin + 1:end] = [indent + line + "\n" for line in textwrap.dedent(body).strip().splitlines()]
    path.write_text("".join(lines))
    return sub


def assert_names_the_part(name, part, score, max_score, messages):
    assert 0 < score < max_score, name
    named = _stage_lines(messages)
    assert named, f"{name}: no stage check failed"
    assert all(line.startswith(f"first differing stage: {part} (") for line in named), named


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """``dsgrade --target SUBMISSION capstone --json`` of every broken submission (three at a time)."""
    root = tmp_path_factory.mktemp("capstone")

    def grade(name):
        sub = broken_submission(root, name, BROKEN)
        run = dsgrade("--target", str(sub), "capstone", json_path=root / f"{name}.json")
        assert run.code == 1 and run.report is not None, run.out + run.err
        return name, run.report

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(grade, BROKEN))


@pytest.mark.parametrize("name", list(BROKEN))
def test_one_broken_part_is_named_as_the_first_differing_stage(reports, name):
    report = reports[name]
    messages = [chk["message"] for ex in report["exercises"] for chk in ex["checks"]]
    assert_names_the_part(name, BROKEN[name][3], report["score"], report["max_score"], messages)


@pytest.mark.parametrize("name", list(BROKEN_IN_PROCESS))
def test_one_broken_part_is_named_in_process(tmp_path, name):
    sub = broken_submission(tmp_path, name, BROKEN_IN_PROCESS)
    spec = importlib.util.spec_from_file_location(f"broken_{name}", sub / "__init__.py",
                                                  submodule_search_locations=[str(sub)])
    sys.modules[spec.name] = package = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(package)
        records = _grade(importlib.import_module(f"{spec.name}.capstone"))
    finally:
        for module in [m for m in sys.modules if m == spec.name or m.startswith(spec.name + ".")]:
            del sys.modules[module]
    assert_names_the_part(name, BROKEN_IN_PROCESS[name][3], sum(r.points for r in records),
                          registry.load_episode("capstone").max_score, [r.message for r in records])
