"""Conventions of episodes 1-3, proved against published figures and independent implementations.

ep01: parameter counts against DeepSeek's published sizes and against the parameters of
transformers' DeepSeek-V2/V3 models built from tiny configs. ep02: softmax, RMSNorm (float32
inside, DeepSeek-V3's order) and the SwiGLU naming (w1 gate, w3 up, w2 down) against torch and
transformers. ep03: cross-entropy against ``F.cross_entropy``, and the sampling distribution's
properties and its agreement with transformers' temperature/top-k/top-p warpers.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder import registry
from solutions import config
from solutions.ep01_introduction import count_parameters, kv_cache_bytes, moe_parameter_counts
from solutions.ep02_building_blocks import MLP, RMSNorm, rms_norm, silu, softmax, swiglu
from solutions.ep03_token_journey import (cross_entropy, embed_tokens, greedy_next_token, lm_head,
                                          sampling_distribution)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- ep01 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset, total_b, activated_b", [(config.deepseek_v3, 671, 37), (config.deepseek_v2, 236, 21)])
def test_moe_counts_match_published_sizes(preset, total_b, activated_b):
    total, activated = moe_parameter_counts(preset())
    assert abs(total / 1e9 - total_b) / total_b < 0.01
    assert abs(activated / 1e9 - activated_b) / activated_b < 0.02


def _hf_model(cfg):
    """transformers' DeepSeek-V3 (``cfg.gate_bias``) or DeepSeek-V2 causal LM with ``cfg``'s sizes."""
    transformers = pytest.importorskip("transformers")
    common = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.inter_dim,
        moe_intermediate_size=cfg.moe_inter_dim, num_hidden_layers=cfg.n_layers,
        first_k_dense_replace=cfg.n_dense_layers, num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads, n_routed_experts=cfg.n_routed_experts,
        n_shared_experts=cfg.n_shared_experts, num_experts_per_tok=cfg.n_activated_experts,
        n_group=cfg.n_expert_groups, topk_group=cfg.n_limited_groups,
        q_lora_rank=cfg.q_lora_rank or None, kv_lora_rank=cfg.kv_lora_rank,
        qk_nope_head_dim=cfg.qk_nope_head_dim, qk_rope_head_dim=cfg.qk_rope_head_dim,
        v_head_dim=cfg.v_head_dim, tie_word_embeddings=False,
    )
    if cfg.gate_bias:
        return transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(**common))
    return transformers.DeepseekV2ForCausalLM(transformers.DeepseekV2Config(**common))


TINY_VARIANTS = [{}, {"q_lora_rank": 0}, {"gate_bias": False}, {"gate_bias": False, "q_lora_rank": 0},
                 {"n_layers": 4, "n_dense_layers": 2, "n_shared_experts": 2},
                 {"n_dense_layers": 0, "n_activated_experts": 3}]


@pytest.mark.parametrize("overrides", TINY_VARIANTS, ids=str)
def test_moe_counts_match_transformers_models(overrides):
    """Built module by module: the formula counts what a real DeepSeek implementation instantiates."""
    cfg = config.tiny(**overrides)
    model = _hf_model(cfg)
    # transformers keeps DeepSeek-V3's selection bias as a buffer; inference/model.py has it as a Parameter.
    bias = sum(b.numel() for name, b in model.named_buffers() if name.endswith("e_score_correction_bias"))
    assert (bias > 0) == cfg.gate_bias
    total, activated = moe_parameter_counts(cfg)
    assert total == count_parameters(model) + bias

    experts = [m for name, m in model.named_modules() if name.endswith("mlp.experts")]
    assert len(experts) == cfg.n_layers - cfg.n_dense_layers
    one_expert = count_parameters(experts[0]) // cfg.n_routed_experts
    idle = len(experts) * (cfg.n_routed_experts - cfg.n_activated_experts) * one_expert
    assert activated == total - idle


def test_count_parameters_counts_trainable_elements_once():
    assert count_parameters(nn.Linear(4, 3)) == 15
    embed, head = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
    head.weight = embed.weight
    tied = nn.ModuleDict({"embed": embed, "head": head, "norm": nn.BatchNorm1d(4)})
    assert count_parameters(tied) == 40 + 8  # shared matrix once; BatchNorm's weight and bias, not its buffers
    embed.weight.requires_grad_(False)
    assert count_parameters(tied) == 8


def test_kv_cache_bytes_known_figures():
    # Llama-2-7B (32 layers, 32 heads of 128) in float16: 0.5 MiB per token, 2 GiB for 4K tokens.
    assert kv_cache_bytes(32, 32, 128, 1, 1, 2) == 2**19
    assert kv_cache_bytes(32, 32, 128, 4096, 1, 2) == 2 * 2**30
    assert kv_cache_bytes(32, 32, 128, 4096, 3, 2) == 3 * kv_cache_bytes(32, 32, 128, 4096, 1, 2)
    assert kv_cache_bytes(32, 8, 128, 4096, 1, 2) * 4 == kv_cache_bytes(32, 32, 128, 4096, 1, 2)  # GQA, 8 groups


# --- ep02 ------------------------------------------------------------------------------------------

def test_softmax_is_stable_and_handles_minus_inf():
    x = torch.randn(3, 4, 6, generator=gen())
    torch.testing.assert_close(softmax(x + 1000.0), torch.softmax(x, -1))
    masked = x.masked_fill(torch.rand(3, 4, 6, generator=gen(1)) < 0.5, float("-inf"))
    masked[..., 0] = 0.0
    out = softmax(masked)
    assert torch.isfinite(out).all() and (out[masked == float("-inf")] == 0).all()
    torch.testing.assert_close(out, torch.softmax(masked, -1))
    torch.testing.assert_close(softmax(x.double(), dim=1), torch.softmax(x.double(), 1))


def test_rms_norm_float32_inside_and_deepseek_order_for_bfloat16():
    x = (torch.randn(4, 5, 32, generator=gen()) * 10).bfloat16()
    w = (1 + 0.1 * torch.randn(32, generator=gen(1))).bfloat16()
    out = rms_norm(x, w)
    assert out.dtype == torch.bfloat16
    # DeepSeek-V3 (commit adecc0e): normalise and scale in float32, cast once at the end.
    deepseek = F.rms_norm(x.float(), (32,), w.float(), 1e-6).bfloat16()
    assert torch.equal(out, deepseek)
    # Casting before the weight multiply (transformers' order) rounds twice and differs somewhere.
    hf_order = w * F.rms_norm(x.float(), (32,), None, 1e-6).bfloat16()
    assert not torch.equal(out, hf_order)


def test_rms_norm_keeps_float64_and_matches_transformers_in_float32():
    x = torch.randn(3, 7, 16, dtype=torch.float64, generator=gen())
    w = 1 + 0.1 * torch.randn(16, dtype=torch.float64, generator=gen(1))
    out = rms_norm(x, w)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, F.rms_norm(x, (16,), w, 1e-6), atol=1e-14, rtol=1e-13)

    pytest.importorskip("transformers")
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3RMSNorm

    ours, theirs = RMSNorm(16), DeepseekV3RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ours.weight.copy_(w.float())
        theirs.weight.copy_(w.float())
    torch.testing.assert_close(ours(x.float()), theirs(x.float()))


def test_swiglu_names_w1_gate_w3_up_w2_down():
    """Weights mapped by role (gate_proj = w1, up_proj = w3, down_proj = w2), transformers' MLP agrees."""
    pytest.importorskip("transformers")
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MLP

    ours = MLP(6, 10)
    theirs = DeepseekV3MLP(DeepseekV3Config(hidden_size=6, intermediate_size=10))
    with torch.no_grad():
        for seed, param in enumerate(ours.parameters()):
            param.copy_(torch.randn(param.shape, generator=gen(seed)))
        theirs.gate_proj.weight.copy_(ours.w1.weight)
        theirs.up_proj.weight.copy_(ours.w3.weight)
        theirs.down_proj.weight.copy_(ours.w2.weight)
        x = torch.randn(2, 3, 6, generator=gen())
        torch.testing.assert_close(ours(x), theirs(x))
        torch.testing.assert_close(swiglu(x, ours.w1.weight, ours.w2.weight, ours.w3.weight), ours(x))
        assert not torch.allclose(swiglu(x, ours.w3.weight, ours.w2.weight, ours.w1.weight), ours(x))
    torch.testing.assert_close(silu(x), F.silu(x))


def test_swapping_w1_and_w3_is_a_named_misconception():
    ep02 = registry.load_episode("ep02")
    for exercise in ("swiglu", "MLP"):
        names = {m.name for ex in ep02.exercises if ex.name == exercise for m in ex.misconceptions}
        assert "w1_w3_swapped" in names  # test_misconceptions.py proves it loses points


# --- ep03 ------------------------------------------------------------------------------------------

def test_embedding_and_head_are_lookup_and_linear():
    table = torch.randn(11, 4, generator=gen())
    ids = torch.randint(11, (2, 5), generator=gen(1))
    torch.testing.assert_close(embed_tokens(ids, table), F.embedding(ids, table), rtol=0, atol=0)
    h, w = torch.randn(2, 5, 4, generator=gen(2)), torch.randn(11, 4, generator=gen(3))
    torch.testing.assert_close(lm_head(h, w), F.linear(h, w))


@pytest.mark.parametrize("scale, offset, dtype", [(1.0, 0.0, torch.float32), (300.0, 0.0, torch.float32),
                                                  (1.0, 1e4, torch.float32), (2e4, -5e3, torch.float64)])
def test_cross_entropy_equals_torch_including_large_logits(scale, offset, dtype):
    logits = (torch.randn(3, 4, 9, generator=gen(), dtype=torch.float64) * scale + offset).to(dtype)
    targets = torch.randint(9, (3, 4), generator=gen(1))
    ours = cross_entropy(logits, targets)
    assert ours.shape == () and ours.dtype == dtype and torch.isfinite(ours)
    expected = F.cross_entropy(logits.reshape(-1, 9), targets.reshape(-1))
    torch.testing.assert_close(ours, expected, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-5)
    torch.testing.assert_close(cross_entropy(logits[0], targets[0]), F.cross_entropy(logits[0], targets[0]),
                               rtol=1e-5, atol=1e-5)


def test_greedy_takes_the_lowest_of_equal_maxima():
    logits = torch.tensor([[0.0, 2.0, 2.0], [1.0, 1.0, 1.0], [-3.0, -1.0, -2.0]])
    assert greedy_next_token(logits).tolist() == [1, 0, 1]
    assert greedy_next_token(logits).dtype == torch.long


def kept_set(logits, temperature, top_k, top_p):
    """The documented kept set, computed by brute force (pairwise comparisons, no sorting)."""
    z = logits / temperature
    keep = torch.ones_like(z, dtype=torch.bool)
    if top_k is not None:
        n_above = (z.unsqueeze(-1) < z.unsqueeze(-2)).sum(-1)  # tokens strictly larger than each token
        keep = n_above < top_k
    if top_p is not None:
        q = torch.softmax(z.masked_fill(~keep, float("-inf")), dim=-1)
        more_probable = (q.unsqueeze(-1) < q.unsqueeze(-2)).to(q.dtype)  # [.., i, j]: q_j > q_i
        mass_above = (more_probable * q.unsqueeze(-2)).sum(-1)
        keep = keep & (mass_above < top_p)
    return keep


SETTINGS = [(1.0, None, None), (0.5, None, None), (1.0, 3, None), (1.0, None, 0.7), (0.7, 5, 0.8),
            (2.0, 4, 0.5), (1.3, 100, 0.95), (0.8, 1, 0.3), (1.0, 6, 1.0)]


@pytest.mark.parametrize("temperature, top_k, top_p", SETTINGS)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_sampling_distribution_properties(temperature, top_k, top_p, ties):
    g = gen(7)
    logits = torch.randint(5, (6, 12), generator=g).double() if ties else torch.randn(6, 12, generator=g,
                                                                                         dtype=torch.float64) * 2
    probs = sampling_distribution(logits, temperature, top_k, top_p)
    assert probs.shape == logits.shape and probs.dtype == logits.dtype
    torch.testing.assert_close(probs.sum(-1), torch.ones(6, dtype=torch.float64))
    keep = kept_set(logits, temperature, top_k, top_p if top_p is None or top_p < 1 else None)
    assert torch.equal(probs > 0, keep)
    assert keep.gather(-1, logits.argmax(-1, keepdim=True)).all()  # the most likely token always stays
    expected = torch.softmax((logits / temperature).masked_fill(~keep, float("-inf")), dim=-1)
    torch.testing.assert_close(probs, expected)


def test_sampling_order_temperature_changes_what_top_p_keeps():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert (sampling_distribution(logits, top_p=0.7) > 0).sum() == 2
    assert (sampling_distribution(logits, temperature=3.0, top_p=0.7) > 0).sum() == 3  # flatter: more tokens
    # top-p measures the distribution renormalised over the top-k survivors
    assert (sampling_distribution(logits, top_k=2, top_p=0.7) > 0).sum() == 2
    assert (sampling_distribution(logits, top_k=2, top_p=0.6) > 0).sum() == 1  # 0.5/0.8 = 0.625 >= 0.6


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.7, 5, 0.8), (1.5, 20, 0.6), (0.9, 3, 0.95), (1.0, 50, 0.3)])
def test_sampling_distribution_matches_transformers_warpers(temperature, top_k, top_p):
    """transformers applies the same chain (temperature, top-k, top-p) in generate()."""
    pytest.importorskip("transformers")
    from transformers.generation import logits_process as lp

    logits = torch.randn(8, 40, generator=gen(3)) * 3
    scores = logits.clone()
    for warper in (lp.TemperatureLogitsWarper(temperature), lp.TopKLogitsWarper(top_k), lp.TopPLogitsWarper(top_p)):
        scores = warper(None, scores)
    torch.testing.assert_close(sampling_distribution(logits, temperature, top_k, top_p), torch.softmax(scores, -1))


def test_checks_use_distinct_sizes():
    """No case of these episodes uses the same size (> 1) twice among batch, seq, widths and vocabulary."""
    for ep_id in ("ep01", "ep02", "ep03"):
        for ex in registry.load_episode(ep_id).exercises:
            for chk in ex.checks:
                for c in chk.cases:
                    keys = ("b", "t", "dim", "d", "n", "vocab", "inter", "hidden", "d_in", "d_out")
                    sizes = [c.params[k] for k in keys if k in c.params] + list(c.params.get("lead", []))
                    big = [s for s in sizes if s > 1]
                    assert len(big) == len(set(big)), f"{chk.item_id(c)} repeats a size: {sizes}"
