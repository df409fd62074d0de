"""Independent proof of episode 19: the reference ``MoE`` equals transformers' DeepSeek MoE layers.

With the weights mapped by name, ``solutions.ep19_moe.MoE`` gives the same output (float32, ≤ 1e-5) as
``DeepseekV3MoE`` (sigmoid gate, selection bias, group-limited routing, renormalised weights) and as
``DeepseekV2Moe`` (softmax gate, greedy and group-limited greedy routing, no renormalisation), and its
``Gate`` chooses the same experts with the same weights. The models are built from tiny configs: no downloads.

Name map (transformers ≥ 5 packs the routed experts into two tensors per layer, ``[gate; up]`` stacked)::

    gate.weight                 ← gate.weight
    gate.bias                   ← gate.e_score_correction_bias              (V3 only)
    experts[i].w1 / w3 / w2     ← experts.gate_up_proj[i][:inter] / [inter:], experts.down_proj[i]
                                  (older transformers: experts[i].gate_proj / up_proj / down_proj)
    shared_experts.w1 / w3 / w2 ← shared_experts.gate_proj / up_proj / down_proj
"""

import importlib

import pytest
import torch

from solutions import config
from solutions.ep19_moe import MoE

transformers = pytest.importorskip("transformers")

TOLERANCE = dict(atol=1e-5, rtol=1e-5)
SIZES = dict(dim=24, moe_inter_dim=10, n_shared_experts=2)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steady timings on a shared machine; results do not depend on it
    yield
    torch.set_num_threads(threads)


def hf_config(cfg, version, topk_method=None):
    """A transformers DeepSeek-V2/V3 config with the MoE sizes of ``cfg``."""
    common = dict(hidden_size=cfg.dim, moe_intermediate_size=cfg.moe_inter_dim, n_routed_experts=cfg.n_routed_experts,
                  n_shared_experts=cfg.n_shared_experts, num_experts_per_tok=cfg.n_activated_experts,
                  n_group=cfg.n_expert_groups, topk_group=cfg.n_limited_groups,
                  routed_scaling_factor=cfg.route_scale, num_attention_heads=4, num_key_value_heads=4,
                  experts_implementation="eager")  # the reference loop over experts, as a standalone layer
    if version == "v3":
        return transformers.DeepseekV3Config(norm_topk_prob=True, **common)
    return transformers.DeepseekV2Config(topk_method=topk_method, **common)


def hf_moe(hf_cfg, version):
    """transformers' MoE layer class for the version (its name changed across releases)."""
    module = importlib.import_module(f"transformers.models.deepseek_{version}.modeling_deepseek_{version}")
    prefix = f"Deepseek{version.upper()}"
    cls = getattr(module, f"{prefix}Moe", None) or getattr(module, f"{prefix}MoE")
    return cls(hf_cfg).eval()


def copy_weights(ours: MoE, theirs, gen: torch.Generator) -> None:
    """Fills ``ours`` with random weights and copies them into ``theirs`` by name."""
    with torch.no_grad():
        for p in ours.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / (p.shape[-1] ** 0.5 if p.dim() == 2 else 10.0))
        theirs.gate.weight.copy_(ours.gate.weight)
        if ours.gate.bias is not None:
            theirs.gate.e_score_correction_bias.copy_(ours.gate.bias)
        experts = theirs.experts
        for i, expert in enumerate(ours.experts):
            if hasattr(experts, "gate_up_proj"):  # packed: (E, 2·inter, dim) = [gate; up], (E, dim, inter)
                experts.gate_up_proj[i].copy_(torch.cat([expert.w1.weight, expert.w3.weight]))
                experts.down_proj[i].copy_(expert.w2.weight)
            else:
                experts[i].gate_proj.weight.copy_(expert.w1.weight)
                experts[i].up_proj.weight.copy_(expert.w3.weight)
                experts[i].down_proj.weight.copy_(expert.w2.weight)
        shared = theirs.shared_experts
        shared.gate_proj.weight.copy_(ours.shared_experts.w1.weight)
        shared.up_proj.weight.copy_(ours.shared_experts.w3.weight)
        shared.down_proj.weight.copy_(ours.shared_experts.w2.weight)


def paired(cfg, version, topk_method=None, seed=0):
    """Our MoE and transformers' with the same weights."""
    ours = MoE(cfg).eval()
    theirs = hf_moe(hf_config(cfg, version, topk_method), version)
    copy_weights(ours, theirs, torch.Generator().manual_seed(seed))
    return ours, theirs


def by_expert(weights, indices):
    """Each token's (weight, expert) pairs sorted by expert id (transformers does not sort its top-k)."""
    order = indices.argsort(dim=-1)
    return weights.gather(-1, order), indices.gather(-1, order)


V3_CASES = {
    "v3_groups_bias": config.tiny(**SIZES),
    "v3_12_experts_3_groups_top3": config.tiny(n_routed_experts=12, n_activated_experts=3, n_expert_groups=3,
                                               n_limited_groups=2, **SIZES),
    "v3_deepseek_routing_16_experts": config.tiny(n_routed_experts=16, n_activated_experts=4, n_expert_groups=4,
                                                  n_limited_groups=2, **SIZES),
}
V2_CASES = {
    "v2_greedy": (config.tiny(score_func="softmax", gate_bias=False, route_scale=1.0, n_expert_groups=1,
                              n_limited_groups=1, n_activated_experts=3, **SIZES), "greedy"),
    "v2_group_limited": (config.tiny(score_func="softmax", gate_bias=False, route_scale=16.0, n_routed_experts=12,
                                     n_activated_experts=3, n_expert_groups=4, n_limited_groups=2, **SIZES),
                         "group_limited_greedy"),
}
CASES = {**{k: (v, "v3", None) for k, v in V3_CASES.items()}, **{k: (v[0], "v2", v[1]) for k, v in V2_CASES.items()}}


def tokens(cfg, seed=1, b=3, t=7):
    return torch.randn(b, t, cfg.dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", CASES)
def test_moe_output_equals_transformers(name):
    cfg, version, topk_method = CASES[name]
    ours, theirs = paired(cfg, version, topk_method)
    x = tokens(cfg)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    torch.testing.assert_close(got, expected, **TOLERANCE)
    assert (expected - ours.shared_experts(x)).abs().max() > 0.01  # the routed experts contribute


@pytest.mark.parametrize("name", CASES)
def test_gate_chooses_the_same_experts_with_the_same_weights(name):
    cfg, version, topk_method = CASES[name]
    ours, theirs = paired(cfg, version, topk_method)
    x = tokens(cfg, seed=2).view(-1, cfg.dim)
    with torch.no_grad():
        _, hf_weights, hf_indices = theirs.gate(x)
        weights, indices = ours.gate(x)
    hf_weights, hf_indices = by_expert(hf_weights, hf_indices)
    weights, indices = by_expert(weights, indices)
    assert torch.equal(indices, hf_indices)
    torch.testing.assert_close(weights, hf_weights, **TOLERANCE)


def test_the_bias_changes_the_choice_in_both():
    """The V3 parity is not vacuous: the selection bias changes which experts both implementations choose."""
    cfg = V3_CASES["v3_groups_bias"]
    ours, theirs = paired(cfg, "v3")
    x = tokens(cfg, seed=3).view(-1, cfg.dim)
    with torch.no_grad():
        before = by_expert(*ours.gate(x))[1]
        for bias in (ours.gate.bias, theirs.gate.e_score_correction_bias):
            bias.copy_(torch.linspace(-0.5, 0.5, cfg.n_routed_experts))
        after, hf_after = by_expert(*ours.gate(x))[1], by_expert(*theirs.gate(x)[1:])[1]
    assert not torch.equal(before, after)
    assert torch.equal(after, hf_after)


def test_group_limits_change_the_choice_in_v2():
    """The group-limited V2 parity is not vacuous: greedy routing over all experts chooses differently."""
    cfg, _ = V2_CASES["v2_group_limited"]
    _, limited = paired(cfg, "v2", "group_limited_greedy")
    _, greedy = paired(cfg, "v2", "greedy")
    x = tokens(cfg, seed=4).view(-1, cfg.dim)
    with torch.no_grad():
        assert not torch.equal(by_expert(*limited.gate(x)[1:])[1], by_expert(*greedy.gate(x)[1:])[1])


def measured_differences() -> dict:
    """Max |ours − transformers| of the MoE output per case (for the report: ``python tests/test_parity_moe.py``)."""
    diffs = {}
    for name, (cfg, version, topk_method) in CASES.items():
        ours, theirs = paired(cfg, version, topk_method)
        x = tokens(cfg)
        with torch.no_grad():
            diffs[name] = (ours(x) - theirs(x)).abs().max().item()
    return diffs


if __name__ == "__main__":
    for case_name, diff in measured_differences().items():
        print(f"{case_name:34s} max |Δ| = {diff:.2e}")
