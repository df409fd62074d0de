"""Conventions, worked examples and the balancing demonstration of episodes 18–20, proven on the reference.

ep18: the expert is ep02's SwiGLU; router scores are a float32 softmax/sigmoid; top-k keeps the best scores;
the dense mixture is the softmax-weighted sum of every expert. ep19: DeepSeek-V3's gate on hand-made scores
(groups scored by top-2 sums with the bias, by max without; the bias steers the choice, not the weights; dropped
groups get -inf; sigmoid weights renormalised, softmax weights not), the fp32 bias, the MoE against a
brute-force sum and against ep18's dense mixture. ep20: each loss on a hand-computed example and at its known
minimum, the capacity rule, the bias step, and the demonstration that bias updates alone balance a skewed router.
"""

import math
import re

import pytest
import torch

from solutions import config
from solutions import ep18_moe_intro as ep18
from solutions import ep19_moe as ep19
from solutions import ep20_moe_balancing as ep20
from solutions.ep02_building_blocks import MLP


@pytest.fixture(autouse=True)
def _seeded_one_thread():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steady timings on a shared machine; results do not depend on it
    yield
    torch.set_num_threads(threads)


def close(a, b, **tol):
    torch.testing.assert_close(a, b, **(tol or dict(atol=1e-12, rtol=1e-10)))


def logit(p):
    """The logits whose sigmoid is ``p``."""
    p = torch.as_tensor(p, dtype=torch.float64)
    return torch.log(p / (1 - p))


def gate_on_scores(sigmoid_scores, bias=None, **overrides):
    """A float64 gate whose router weight is the identity, fed the logits of given sigmoid scores.

    Returns the gate's ``(weights, indices)`` for one token whose per-expert scores are ``sigmoid_scores``.
    """
    n = len(sigmoid_scores)
    cfg = config.tiny(dim=n, n_routed_experts=n, **overrides)
    gate = ep19.Gate(cfg).double()
    with torch.no_grad():
        gate.weight.copy_(torch.eye(n))
        if bias is not None:
            gate.bias.copy_(torch.tensor(bias))
    return gate(logit(sigmoid_scores).unsqueeze(0))


# --- ep18 ----------------------------------------------------------------------------------------------------


def test_expert_is_swiglu_with_deepseek_names():
    expert = ep18.Expert(6, 4).double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    w1, w2, w3 = expert.w1.weight, expert.w2.weight, expert.w3.weight
    assert w1.shape == w3.shape == (4, 6) and w2.shape == (6, 4)
    close(expert(x), (torch.nn.functional.silu(x @ w1.T) * (x @ w3.T)) @ w2.T)
    mlp = MLP(6, 4).double()
    mlp.load_state_dict(expert.state_dict())  # the same parameters as ep02's MLP, name for name
    close(expert(x), mlp(x))


def test_router_scores_softmax_and_sigmoid():
    x, w = torch.randn(3, 4, 5), torch.randn(6, 5)
    soft = ep18.router_scores(x, w, "softmax")
    close(soft, torch.softmax(x @ w.T, dim=-1), atol=1e-6, rtol=1e-5)
    close(soft.sum(-1), torch.ones(3, 4), atol=1e-6, rtol=0)
    close(ep18.router_scores(x, w, "sigmoid"), torch.sigmoid(x @ w.T), atol=1e-6, rtol=1e-5)


def test_router_scores_are_float32_for_bfloat16_and_stable():
    x, w = torch.randn(2, 3, 5).bfloat16(), torch.randn(4, 5).bfloat16()
    assert ep18.router_scores(x, w, "softmax").dtype == torch.float32
    assert ep18.router_scores(x, w, "sigmoid").dtype == torch.float32
    assert ep18.router_scores(x.double(), w.double(), "softmax").dtype == torch.float64
    x64, w64 = x.double(), w.double()
    shifted = torch.cat([w64, torch.ones(4, 1, dtype=torch.float64)], dim=1)  # adds x[..., 5] to every logit
    x_big = torch.cat([x64, torch.full((2, 3, 1), 1e5, dtype=torch.float64)], dim=-1)  # exp(1e5) overflows
    close(ep18.router_scores(x_big, shifted, "softmax"), ep18.router_scores(x64, w64, "softmax"), atol=1e-9, rtol=1e-7)


def test_top_k_routing_worked_example():
    scores = torch.tensor([[0.1, 0.5, 0.15, 0.25]])
    weights, indices = ep18.top_k_routing(scores, 2)
    assert indices.tolist() == [[1, 3]]  # descending score
    close(weights, torch.tensor([[0.5, 0.25]]))
    weights, _ = ep18.top_k_routing(scores, 2, normalize=True)
    close(weights, torch.tensor([[2 / 3, 1 / 3]]))


def test_dense_moe_is_the_softmax_weighted_sum_of_all_experts():
    layer = ep18.DenseMoE(6, 4, 3).double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    p = torch.softmax(layer.gate(x), dim=-1)
    close(layer(x), sum(p[..., e:e + 1] * layer.experts[e](x) for e in range(3)))
    for expert in layer.experts[1:]:  # identical experts: the mixture is that expert, whatever the router says
        expert.load_state_dict(layer.experts[0].state_dict())
    close(layer(x), layer.experts[0](x))


# --- ep19 ----------------------------------------------------------------------------------------------------

# One token, 8 experts in 4 groups of 2, 2 groups kept, top-2, sigmoid, route_scale 2.5 (the tiny config).
SCORES = [0.9, 0.1, 0.8, 0.7, 0.6, 0.65, 0.2, 0.3]  # group top-2 sums 1.0, 1.5, 1.25, 0.5; maxima .9, .8, .65, .3


def test_gate_with_bias_scores_groups_by_their_top_two_sum():
    weights, indices = gate_on_scores(SCORES, bias=[0.0] * 8)
    assert indices.tolist() == [[2, 3]]  # groups 1 and 2 kept; not expert 0, the best overall
    close(weights, 2.5 * torch.tensor([[0.8, 0.7]], dtype=torch.float64) / 1.5)  # renormalised, times route_scale


def test_gate_without_bias_scores_groups_by_their_max():
    weights, indices = gate_on_scores(SCORES, gate_bias=False)
    assert indices.tolist() == [[0, 2]]  # groups 0 and 1 kept by their maxima
    close(weights, 2.5 * torch.tensor([[0.9, 0.8]], dtype=torch.float64) / 1.7)


def test_gate_without_groups_takes_the_best_overall():
    _, indices = gate_on_scores(SCORES, bias=[0.0] * 8, n_expert_groups=1, n_limited_groups=1)
    assert indices.tolist() == [[0, 2]]


def test_bias_steers_the_choice_but_not_the_weights():
    bias = [0.0, 0.0, 0.0, -0.4, 0.0, 0.4, 0.0, 0.0]  # biased: .9 .1 | .8 .3 | .6 1.05 | .2 .3 → groups 2 and 1
    weights, indices = gate_on_scores(SCORES, bias=bias)
    assert indices.tolist() == [[5, 2]]  # in descending biased score
    close(weights, 2.5 * torch.tensor([[0.65, 0.8]], dtype=torch.float64) / 1.45)  # unbiased scores


def test_dropped_groups_lose_even_when_every_biased_score_is_negative():
    weights, indices = gate_on_scores(SCORES, bias=[-2.0] * 8)  # all biased scores < 0: a 0 fill would win
    assert indices.tolist() == [[2, 3]]


def test_softmax_weights_are_not_renormalised():
    cfg = config.tiny(score_func="softmax", gate_bias=False, route_scale=3.0)
    gate = ep19.Gate(cfg).double()
    x = torch.randn(6, cfg.dim, dtype=torch.float64)
    weights, indices = gate(x)
    probs = torch.softmax(x @ gate.weight.T, dim=-1)
    close(weights, 3.0 * probs.gather(-1, indices))
    assert (weights.sum(-1) < 3.0).all()


def test_gate_bias_is_float32_even_in_a_bfloat16_model():
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # how DeepSeek-V3 builds its model
    try:
        gate = ep19.Gate(config.tiny())
    finally:
        torch.set_default_dtype(default)
    assert gate.weight.dtype == torch.bfloat16 and gate.bias.dtype == torch.float32
    assert ep19.Gate(config.tiny(gate_bias=False)).bias is None


def test_moe_parameter_names_and_widths():
    cfg = config.tiny(n_shared_experts=2)
    shapes = {name: tuple(p.shape) for name, p in ep19.MoE(cfg).named_parameters()}
    assert shapes["gate.weight"] == (8, 32) and shapes["gate.bias"] == (8,)
    assert shapes["experts.7.w1.weight"] == (16, 32) and shapes["experts.7.w2.weight"] == (32, 16)
    assert shapes["shared_experts.w1.weight"] == (32, 32) and shapes["shared_experts.w3.weight"] == (32, 32)
    assert len(shapes) == 2 + 8 * 3 + 3


def test_moe_equals_a_brute_force_sum_and_accepts_any_leading_dims():
    moe = ep19.MoE(config.tiny()).double()
    x = torch.randn(3, 4, 32, dtype=torch.float64)
    flat = x.view(-1, 32)
    weights, indices = moe.gate(flat)
    dense = torch.zeros(12, 8, dtype=torch.float64).scatter(1, indices, weights)  # (tokens, experts)
    expected = moe.shared_experts(flat) + sum(dense[:, e:e + 1] * moe.experts[e](flat) for e in range(8))
    close(moe(x), expected.view(3, 4, 32))
    close(moe(flat), expected)  # flattened (n, dim) tokens give the same rows


def test_moe_routing_every_expert_with_softmax_is_the_dense_mixture_plus_shared():
    cfg = config.tiny(score_func="softmax", gate_bias=False, route_scale=1.0, n_expert_groups=1,
                      n_limited_groups=1, n_activated_experts=8)
    moe = ep19.MoE(cfg).double()
    dense = ep18.DenseMoE(cfg.dim, cfg.moe_inter_dim, cfg.n_routed_experts).double()
    dense.load_state_dict({k: v for k, v in moe.state_dict().items() if not k.startswith("shared")})
    x = torch.randn(2, 3, cfg.dim, dtype=torch.float64)
    close(moe(x), dense(x) + moe.shared_experts(x))


def test_expert_token_counts():
    indices = torch.tensor([[[0, 3], [3, 1]], [[3, 0], [1, 2]]])
    assert ep19.expert_token_counts(indices, 6).tolist() == [2, 2, 1, 3, 0, 0]
    assert ep19.expert_token_counts(indices, 6).dtype == torch.int64


# --- ep20: losses ---------------------------------------------------------------------------------------------


def test_importance_cv_loss_worked_examples():
    close(ep20.importance_cv_loss(torch.full((6, 3), 1 / 3)), torch.tensor(0.0))  # uniform: the minimum
    # importance (1.5, 0.5): mean 1, population variance 0.25
    close(ep20.importance_cv_loss(torch.tensor([[0.5, 0.5], [1.0, 0.0]])), torch.tensor(0.25))
    probs = torch.softmax(torch.randn(2, 5, 4), dim=-1)
    close(ep20.importance_cv_loss(probs), ep20.importance_cv_loss(probs.view(10, 4)))  # leading dims are tokens


def test_switch_loss_worked_examples_and_gradient():
    probs = torch.tensor([[0.8, 0.2], [0.6, 0.4]], requires_grad=True)
    loss = ep20.switch_load_balancing_loss(probs, torch.tensor([0, 0]), 2)  # f = (1, 0), P = (0.7, 0.3)
    close(loss, torch.tensor(1.4), atol=1e-6, rtol=1e-6)
    loss.backward()
    close(probs.grad, torch.tensor([[1.0, 0.0], [1.0, 0.0]]))  # N·f_i/T: through P only
    uniform = ep20.switch_load_balancing_loss(torch.full((8, 4), 0.25), torch.arange(8) % 4, 4)
    close(uniform, torch.tensor(1.0))  # the minimum
    everything_on_0 = torch.tensor([[1.0, 0.0, 0.0]] * 5)
    collapsed = ep20.switch_load_balancing_loss(everything_on_0, torch.zeros(5, dtype=torch.long), 3)
    close(collapsed, torch.tensor(3.0))  # everything on one expert: N


def test_switch_top1_is_deepseek_v2_expert_loss_with_k1_alpha1():
    probs = torch.softmax(torch.randn(9, 5, dtype=torch.float64), dim=-1)
    top1 = probs.argmax(-1)
    close(ep20.switch_load_balancing_loss(probs, top1, 5),
          ep20.expert_balance_loss(probs, top1.unsqueeze(-1), 5, top_k=1, alpha=1.0))


def test_expert_balance_loss_worked_examples():
    scores = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.5, 0.1, 0.3, 0.1]], dtype=torch.float64)
    # counts (2, 1, 1, 0); f = 4/(2·2)·counts = (2, 1, 1, 0); P = (0.45, 0.2, 0.25, 0.1): Σ f·P = 1.35
    loss = ep20.expert_balance_loss(scores, torch.tensor([[0, 1], [0, 2]]), 4, top_k=2, alpha=0.1)
    close(loss, torch.tensor(0.135, dtype=torch.float64))
    uniform = ep20.expert_balance_loss(torch.full((4, 4), 0.25), torch.tensor([[0, 1], [2, 3]] * 2), 4, 2, alpha=0.3)
    close(uniform, torch.tensor(0.3), atol=1e-7, rtol=1e-6)  # α: f_i = 1, P_i = 1/N


def test_sequence_balance_loss_is_per_sequence_on_normalised_scores():
    scores = torch.tensor([[[0.6, 0.2]], [[0.1, 0.3]]], dtype=torch.float64)  # 2 sequences of 1 token
    indices = torch.tensor([[[0]], [[1]]])
    # each sequence: s' = (.75, .25) or (.25, .75), f = (2, 0) or (0, 2): 1.5·α each
    close(ep20.sequence_balance_loss(scores, indices, 2, top_k=1, alpha=0.1), torch.tensor(0.15, dtype=torch.float64))
    # pooled over the batch it would be balanced (f = (1, 1), P = (.5, .5)): α
    pooled = ep20.expert_balance_loss(scores / scores.sum(-1, keepdim=True), indices, 2, top_k=1, alpha=0.1)
    close(pooled, torch.tensor(0.1, dtype=torch.float64))
    uniform = ep20.sequence_balance_loss(torch.full((3, 4, 4), 0.7), torch.tensor([[0, 1], [2, 3]] * 2).expand(3, 4, 2),
                                         4, 2, alpha=0.01)
    close(uniform, torch.tensor(0.01), atol=1e-8, rtol=1e-6)


# --- ep20: gating, capacity, bias ----------------------------------------------------------------------------


def test_noisy_top_k_gating():
    x, w_gate, w_noise = torch.randn(2, 3, 5), torch.randn(6, 5), torch.randn(6, 5)
    noise = torch.randn(2, 3, 6)
    gates = ep20.noisy_top_k_gating(x, w_gate, w_noise, 2, noise)
    assert ((gates > 0).sum(-1) == 2).all()
    close(gates.sum(-1), torch.ones(2, 3), atol=1e-6, rtol=0)
    h = x @ w_gate.T + noise * torch.nn.functional.softplus(x @ w_noise.T)
    top = h.topk(2, dim=-1)
    close(gates.gather(-1, top.indices), torch.softmax(top.values, dim=-1), atol=1e-6, rtol=1e-5)
    close(ep20.noisy_top_k_gating(x, w_gate, w_noise, 2, None),
          ep20.noisy_top_k_gating(x, w_gate, w_noise, 2, torch.zeros(2, 3, 6)))


def test_capacity_mask_worked_example():
    indices = torch.tensor([[0, 1], [0, 2], [0, 1], [0, 3]])  # 8 assignments, 4 experts
    kept = ep20.capacity_mask(indices, 4, 1.0)  # capacity 2: expert 0 serves tokens 0 and 1 only
    assert kept.tolist() == [[True, True], [True, True], [False, True], [False, True]]
    kept = ep20.capacity_mask(indices, 4, 1.25)  # capacity ceil(2.5) = 3
    assert kept.tolist() == [[True, True], [True, True], [True, True], [False, True]]
    assert ep20.capacity_mask(indices, 4, 2.0).all()


def test_update_routing_bias_moves_by_gamma_towards_balance():
    bias = torch.tensor([0.5, -0.25, 0.0, 0.125])
    new = ep20.update_routing_bias(bias, torch.tensor([10, 2, 6, 6]), gamma=0.125)  # mean 6
    assert new.tolist() == [0.375, -0.125, 0.0, 0.125]
    assert bias.tolist() == [0.5, -0.25, 0.0, 0.125]  # the input is unchanged
    assert new.dtype == torch.float32


# --- ep20: the demonstration ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_ratios():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield ep20.bias_balancing_demo()  # 200 steps, gamma 0.002, no auxiliary loss
    torch.set_num_threads(threads)


def test_bias_updates_alone_balance_a_skewed_router(demo_ratios):
    ratios = demo_ratios
    assert len(ratios) == 201
    assert ratios[0] > 2.5  # skewed: the two favoured experts take most tokens
    assert ratios[200] < 1.2 and max(ratios[180:]) < 1.2  # balanced, and it stays so
    control = ep20.bias_balancing_demo(steps=50, gamma=0.0)
    assert min(control) > 2.5  # without the update it stays skewed


def test_the_docstring_figure_is_the_demonstration(demo_ratios):
    ratios = demo_ratios
    rows = re.findall(r"^\s+(\d+)\s+(\d\.\d\d)\s+(#*)$", ep20.__doc__, re.M)
    assert len(rows) >= 6 and rows[-1][0] == "200"
    for step, value, bar in rows:
        assert abs(ratios[int(step)] - float(value)) < 0.02, step
        assert len(bar) == round((float(value) - 1) / 0.05)
    assert math.isclose(float(rows[0][1]), ratios[0], abs_tol=0.02)
