"""Checks for episode 19: DeepSeek-V3's Gate, the MoE layer, and expert token counts."""

import torch

from ..probing import build, dtype_of
from ..registry import Episode, case
from .ep16 import config
from .ep18 import routing, tokens

EPISODE = Episode("ep19", "Mixture of Experts – Hands-On Demonstration", video="https://youtu.be/yw6fpYPJ7PI",
                  module="ep19_moe")

# The tiny config (tiny() in solutions/config.py) is DeepSeek-V3 in small: dim 32, 8 routed experts in 4 groups
# of 2, 2 groups kept, top-2, sigmoid with bias, route_scale 2.5. These turn it into DeepSeek-V2 in small.
V2 = dict(score_func="softmax", gate_bias=False, route_scale=1.5)
GREEDY = dict(n_expert_groups=1, n_limited_groups=1)
OTHER = dict(dim=20, moe_inter_dim=6, n_routed_experts=12, n_activated_experts=3, n_expert_groups=3,
             n_limited_groups=2, n_shared_experts=2)


def make_gate(impl, c, gen):
    """The target's ``Gate`` with seeded weights; the case may scale (``bias_scale``) or shift (``bias_shift``)
    the bias, so that it changes the choice more often, or makes every biased score negative."""
    gate = build(impl.Gate, config(impl, c), gen=gen).to(dtype_of(c))
    if gate.bias is not None:
        with torch.no_grad():
            gate.bias.mul_(c.params.get("bias_scale", 1.0)).add_(c.params.get("bias_shift", 0.0))
    return gate


def gate_output(impl, c, gen):
    gate = make_gate(impl, c, gen)
    return routing(gate(tokens(gen, c, config(impl, c).dim)))


# --- Gate ----------------------------------------------------------------------------------------------

gate = EPISODE.exercise("Gate", method="forward")


@gate.check(case("v3", n=12), case("v3_one_token", n=1), case("v3_no_groups", n=10, **GREEDY),
            case("v2_groups", n=12, **V2), case("v2_greedy_top3", n=9, n_activated_experts=3, **V2, **GREEDY),
            case("v3_float64", n=8, dtype="float64"), case("v3_two_groups", n=12, n_expert_groups=2, n_limited_groups=1))
def routing_decisions(impl, c, gen):
    """weights and expert ids: sigmoid + bias + groups (V3), softmax with and without groups (V2), float64, 2 groups"""
    return gate_output(impl, c, gen)


@gate.check(case("strong_bias", n=16, bias_scale=5.0), case("strong_bias_no_groups", n=16, bias_scale=5.0, **GREEDY))
def bias_steers_choice_only(impl, c, gen):
    """a strong bias changes which experts are chosen, never their weights (unbiased scores)"""
    return gate_output(impl, c, gen)


@gate.check(case("negative_bias", n=16, bias_shift=-1.0))
def negative_biased_scores(impl, c, gen):
    """biased scores all below 0: the dropped groups' experts must still never be chosen (-inf, not 0)"""
    return gate_output(impl, c, gen)


@gate.check(case("other_sizes_v3", n=14, **OTHER), case("other_sizes_v2", n=11, **OTHER, **V2),
            case("v2_large_tokens", n=10, scale=6.0, **V2), case("v3_all_groups_kept", n=9, n_limited_groups=4),
            case("negative_bias_other_sizes", n=12, bias_shift=-1.5, **OTHER),
            case("v2_float64", n=7, dtype="float64", **V2), case("noncontiguous", n=10, noncontiguous=True),
            case("v2_two_groups", n=10, n_expert_groups=2, n_limited_groups=1, **V2), hidden=True)
def hidden_routing(impl, c, gen):
    """other sizes and groups, large tokens, every group kept, negative biased scores, float64, non-contiguous"""
    return gate_output(impl, c, gen)


def _route(self, x, renormalise=None, biased_weights=False, groups=True, bias=True, scale=True):
    """The reference gate with one step changed (for the misconceptions below)."""
    from solutions.ep18_moe_intro import router_scores

    scores = router_scores(x, self.weight, self.score_func)
    choice = scores if self.bias is None or not bias else scores + self.bias
    if groups and self.n_groups > 1:
        choice = self.limit_to_groups(choice)
    indices = choice.topk(self.topk, dim=-1).indices
    weights = (choice if biased_weights else scores).gather(-1, indices)
    if (self.score_func == "sigmoid") if renormalise is None else renormalise:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return (weights * (self.route_scale if scale else 1.0)).type_as(x), indices


@gate.misconception("softmax_renormalised", "Softmax weights are not renormalised: the scores already form a "
                    "distribution over all experts, and DeepSeek keeps the chosen ones as they are. Only sigmoid "
                    "weights are divided by their sum.")
def _(self, x):
    return _route(self, x, renormalise=True)


@gate.misconception("sigmoid_not_renormalised", "With score_func='sigmoid', divide the chosen experts' weights by "
                    "their sum (then multiply by route_scale).")
def _(self, x):
    return _route(self, x, renormalise=False)


@gate.misconception("weights_from_biased_scores", "The bias only decides *which* experts are chosen. Take the "
                    "weights from the unbiased scores: scores.gather(-1, indices), not (scores + bias).gather(…).")
def _(self, x):
    return _route(self, x, biased_weights=True)


@gate.misconception("bias_ignored", "Add the bias to the scores before choosing the experts (and before scoring the "
                    "groups); it is what balances the load without an auxiliary loss.")
def _(self, x):
    return _route(self, x, bias=False)


@gate.misconception("groups_ignored", "With n_expert_groups > 1, first keep each token's n_limited_groups best "
                    "groups and give every expert of the other groups -inf; only then take the top-k.")
def _(self, x):
    return _route(self, x, groups=False)


@gate.misconception("two_groups_not_limited", "Group-limited routing applies whenever n_expert_groups > 1, also "
                    "with exactly 2 groups: keep the n_limited_groups best and give the other group's experts -inf.")
def _(self, x):
    return _route(self, x, groups=self.n_groups > 2)


@gate.misconception("no_route_scale", "Multiply the final weights by route_scale.")
def _(self, x):
    return _route(self, x, scale=False)


def _limit(self, choice, group_score, fill=float("-inf"), strided=False):
    n = choice.size(0)
    if strided:  # expert e placed in group e % n_groups
        groups = choice.view(n, -1, self.n_groups).transpose(1, 2)
    else:
        groups = choice.view(n, self.n_groups, -1)
    kept = group_score(groups).topk(self.topk_groups, dim=-1).indices
    dropped = torch.ones(n, self.n_groups, dtype=torch.bool).scatter(1, kept, False)
    limited = groups.masked_fill(dropped.unsqueeze(-1), fill)
    return (limited.transpose(1, 2) if strided else limited).flatten(1)


def _group_score(self):
    if self.bias is None:
        return lambda g: g.amax(dim=-1)
    return lambda g: g.topk(2, dim=-1).values.sum(dim=-1)


@gate.misconception("group_max_with_bias", "With the bias on, a group's score is the sum of its two largest biased "
                    "scores (topk(2).values.sum), not its maximum (the maximum is for gates without a bias).",
                    method="limit_to_groups")
def _(self, choice):
    return _limit(self, choice, lambda g: g.amax(dim=-1))


@gate.misconception("group_sum_of_all", "A group's score is its largest expert score (no bias) or the sum of its "
                    "two largest (with the bias), not the sum of all its experts' scores.", method="limit_to_groups")
def _(self, choice):
    return _limit(self, choice, lambda g: g.sum(dim=-1))


@gate.misconception("dropped_groups_zeroed", "Give the experts of the dropped groups -inf, not 0: biased scores can be "
                    "negative, and then a 0 would win the top-k.", method="limit_to_groups")
def _(self, choice):
    return _limit(self, choice, _group_score(self), fill=0.0)


@gate.misconception("strided_groups", "A group is a block of consecutive experts: view the scores as "
                    "(n, n_groups, E // n_groups), so expert e is in group e // (E // n_groups).",
                    method="limit_to_groups")
def _(self, choice):
    return _limit(self, choice, _group_score(self), strided=True)


# --- expert_token_counts ----------------------------------------------------------------------------------

counts = EPISODE.exercise("expert_token_counts")


def routed_indices(gen, c):
    """``(lead…, k)`` distinct expert ids per token, drawn from the first ``c.used`` of ``c.e`` experts."""
    noise = torch.rand(*c.lead, c.params.get("used", c.e), generator=gen)
    return noise.topk(c.k, dim=-1).indices


@counts.check(case(lead=[10], k=2, e=8), case(lead=[1], k=1, e=4), case(lead=[2, 5], k=3, e=6),
              case(lead=[12], k=2, e=9, used=5))
def counts_per_expert(impl, c, gen):
    """(token, slot) pairs per expert, for (n, k) and (b, t, k) ids, with unused (last) experts counting 0"""
    return impl.expert_token_counts(routed_indices(gen, c), c.e)


@counts.check(case(lead=[3, 7], k=2, e=16, used=9), case(lead=[30], k=4, e=5), hidden=True)
def hidden_counts(impl, c, gen):
    """more experts than were used, many tokens"""
    return impl.expert_token_counts(routed_indices(gen, c), c.e)


@counts.misconception("no_minlength", "Experts nobody chose must still appear with count 0: the result has "
                      "n_experts entries (torch.bincount(…, minlength=n_experts)).")
def _(indices, n_experts):
    return torch.bincount(indices.flatten())


@counts.misconception("first_choice_only", "Count every slot of every token (all k choices, indices.flatten()), "
                      "not only the first choice.")
def _(indices, n_experts):
    return torch.bincount(indices[..., 0].flatten(), minlength=n_experts)


@counts.misconception("fractions", "Return the counts themselves (int64), not the fraction of tokens per expert.")
def _(indices, n_experts):
    return torch.bincount(indices.flatten(), minlength=n_experts) / indices.numel()


# --- MoE -------------------------------------------------------------------------------------------------

moe = EPISODE.exercise("MoE", method="forward")


def make_moe(impl, c, gen):
    return build(impl.MoE, config(impl, c), gen=gen).to(dtype_of(c))


def moe_tokens(impl, c, gen):
    return tokens(gen, c, config(impl, c).dim)


@moe.check(case("v3", b=2, t=5), case("v3_one_token", b=1, t=1), case("v2_groups", b=2, t=3, **V2),
           case("v2_greedy_2_shared", b=3, t=2, n_shared_experts=2, **V2, **GREEDY),
           case("v3_float64", b=2, t=4, dtype="float64"))
def forward_random(impl, c, gen):
    """shared_experts(x) + Σ weight · expert(x) over each token's chosen experts, shape (b, t, dim)"""
    return make_moe(impl, c, gen)(moe_tokens(impl, c, gen))


@moe.check(case("v3", b=3, t=4), case("v2_greedy", b=2, t=3, **V2, **GREEDY))
def experts_see_only_their_tokens(impl, c, gen):
    """each routed expert processes exactly the tokens routed to it (rows per expert = expert_token_counts)"""
    layer = make_moe(impl, c, gen)
    rows = torch.zeros(len(layer.experts), dtype=torch.int64)

    def count_rows(e):
        def hook(module, inputs, output):
            rows[e] += inputs[0].numel() // inputs[0].shape[-1]
        return hook

    for e, expert in enumerate(layer.experts):
        expert.register_forward_hook(count_rows(e))
    layer(moe_tokens(impl, c, gen))
    return rows


@moe.check(case("noncontiguous", b=3, t=4, noncontiguous=True), case("other_sizes_v3", b=2, t=6, **OTHER),
           case("other_sizes_v2", b=3, t=3, **OTHER, **V2), case("flat_tokens", n=7),
           case("large_tokens", b=2, t=3, scale=5.0, dtype="float64"), case("v2_float64", b=2, t=3, dtype="float64", **V2),
           hidden=True)
def hidden_forward(impl, c, gen):
    """non-contiguous tokens, other sizes, (n, dim) tokens, large tokens, float64"""
    return make_moe(impl, c, gen)(moe_tokens(impl, c, gen))


def _moe(self, x, shared=True, weighted=True, slot=None, residual=False, dense=False, renormalised=False):
    """The reference MoE with one step changed (for the misconceptions below)."""
    tokens = x.reshape(-1, self.dim)
    weights, indices = self.gate(tokens)
    if renormalised:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    routed = torch.zeros_like(tokens)
    for e in range(self.n_routed_experts):
        token, s = torch.where(indices == e)
        if dense:  # every expert on every token, zero weight where not chosen
            w = torch.zeros(tokens.shape[0], dtype=tokens.dtype)
            w[token] = weights[token, s]
            routed += self.experts[e](tokens) * w.unsqueeze(-1)
            continue
        w = weights[token, s if slot is None else slot] if weighted else torch.ones_like(token, dtype=tokens.dtype)
        routed.index_add_(0, token, self.experts[e](tokens[token]) * w.unsqueeze(-1))
    out = routed + self.shared_experts(tokens) if shared else routed
    return (out + tokens if residual else out).view(x.shape)


@moe.misconception("shared_expert_forgotten", "Every token also goes through the shared experts: add "
                   "shared_experts(x) to the routed experts' weighted sum.")
def _(self, x):
    return _moe(self, x, shared=False)


@moe.misconception("unweighted_experts", "Multiply each chosen expert's output by that token's gate weight for it "
                   "(weights[token, slot]) before adding it up.")
def _(self, x):
    return _moe(self, x, weighted=False)


@moe.misconception("first_slot_weight", "Expert indices[t, j] gets weight weights[t, j], the weight of *its* slot j "
                   "(torch.where(indices == e) gives both the tokens and the slots).")
def _(self, x):
    return _moe(self, x, slot=0)


@moe.misconception("weights_renormalised", "Use the gate's weights as they come: the gate has already renormalised "
                   "them where DeepSeek does (sigmoid) and applied route_scale. Dividing them by their sum again "
                   "undoes route_scale.")
def _(self, x):
    return _moe(self, x, renormalised=True)


@moe.misconception("residual_added", "MoE returns only the feed-forward output; the residual x + ffn(…) is added "
                   "by the transformer block, not inside the MoE.")
def _(self, x):
    return _moe(self, x, residual=True)


@moe.misconception("dense_compute", "Each routed expert should run only on the tokens routed to it (e.g. "
                   "token, slot = torch.where(indices == e)): running every expert on every token gives the same "
                   "output at n_routed_experts / n_activated_experts times the cost — the sparsity is what makes "
                   "MoE cheap.")
def _(self, x):
    return _moe(self, x, dense=True)
