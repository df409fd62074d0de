"""Checks for episode 18: the SwiGLU expert, router scores, top-k routing and a dense mixture of experts."""

import torch

from ..compare import Tolerance
from ..probing import build, dtype_of, noncontiguous, randn
from ..registry import Episode, case

EPISODE = Episode("ep18", "Mixture of Experts (MoE) – Introduction", video="https://youtu.be/v7U21meXd6Y",
                  module="ep18_moe_intro")

# bfloat16 tokens: the logits may be formed in bfloat16 (DeepSeek) or float32 (transformers), so the float32
# scores agree to bfloat16 precision only; what this tolerance leaves to check is the dtype (float32).
BF16_LOGITS = {"float32": Tolerance(2e-2, 2e-2)}


def tokens(gen, c, dim=None):
    """``(b, t, dim)`` tokens (or ``(n, dim)`` when the case has ``n``), as the case asks."""
    lead = (c.n,) if "n" in c.params else (c.b, c.t)
    x = randn(gen, *lead, dim or c.dim, dtype=dtype_of(c), scale=c.params.get("scale", 1.0))
    return noncontiguous(x) if c.params.get("noncontiguous") else x


def by_expert(weights, indices):
    """``(weights, indices)`` with each token's ``k`` pairs sorted by expert id: the grader ignores their order."""
    if not (isinstance(weights, torch.Tensor) and isinstance(indices, torch.Tensor)):
        return {"weights": weights, "indices": indices}
    order = indices.argsort(dim=-1)
    return {"weights": weights.gather(-1, order), "indices": indices.gather(-1, order)}


def routing(result):
    """A ``(weights, indices)`` result in the grader's canonical order (anything else unchanged)."""
    if isinstance(result, (tuple, list)) and len(result) == 2:
        return by_expert(*result)
    return result


# --- Expert ------------------------------------------------------------------------------------------

expert = EPISODE.exercise("Expert", method="forward")


def expert_output(impl, c, gen):
    layer = build(impl.Expert, c.dim, c.inter_dim, gen=gen).to(dtype_of(c))
    return layer(tokens(gen, c))


@expert.check(case(b=2, t=5, dim=6, inter_dim=4), case(b=1, t=1, dim=8, inter_dim=3),
              case(n=7, dim=5, inter_dim=9), case(b=3, t=2, dim=4, inter_dim=7, dtype="float64"))
def forward_random(impl, c, gen):
    """w2(silu(w1 x) * w3 x) on (b, t, dim) tokens and on (n, dim) routed tokens"""
    return expert_output(impl, c, gen)


@expert.check(case(b=3, t=4, dim=6, inter_dim=5, noncontiguous=True), case(n=9, dim=7, inter_dim=3, scale=8.0),
              case(b=2, t=3, dim=5, inter_dim=11, dtype="float64"), hidden=True)
def forward_hidden(impl, c, gen):
    """non-contiguous tokens, large activations, float64"""
    return expert_output(impl, c, gen)


def _silu(x):
    return x * torch.sigmoid(x)


@expert.misconception("gate_and_up_swapped", "silu belongs on the gate projection w1, not on the up projection w3: "
                      "w2(silu(w1(x)) * w3(x)).")
def _(self, x):
    return self.w2(self.w1(x) * _silu(self.w3(x)))


@expert.misconception("silu_after_product", "Apply silu to w1(x) alone, then multiply by w3(x): "
                      "w2(silu(w1(x)) * w3(x)), not w2(silu(w1(x) * w3(x))).")
def _(self, x):
    return self.w2(_silu(self.w1(x) * self.w3(x)))


@expert.misconception("relu", "The expert's activation is SiLU (x·sigmoid(x)), not ReLU.")
def _(self, x):
    return self.w2(torch.relu(self.w1(x)) * self.w3(x))


@expert.misconception("no_up_projection", "SwiGLU multiplies the activated gate by the up projection w3(x) before "
                      "w2: w2(silu(w1(x)) * w3(x)).")
def _(self, x):
    return self.w2(_silu(self.w1(x)))


# --- router_scores -------------------------------------------------------------------------------------

scores = EPISODE.exercise("router_scores")


def gate_weight(gen, c):
    """A ``(n_experts, dim)`` router weight."""
    return randn(gen, c.e, c.dim, dtype=dtype_of(c))


def on_grid(x, step):
    """``x`` rounded to a multiple of ``step`` (a power of 2)."""
    return (x / step).round() * step


def large_logits_inputs(gen, c):
    """Tokens and a router weight whose logits are about ``c.offset · mean(x)``, thousands away from 0.

    Every row of the weight shares a component ``offset / dim`` (the softmax must not change, and must not
    overflow). Tokens are positive halves and the weight is in eighths, so each logit is exact in float32
    whatever the order of the sum: ``x @ w.T``, an einsum, ``(x * w).sum(-1)`` and a float64 computation
    agree, and what is left to compare is the softmax itself.
    """
    x = on_grid(tokens(gen, c).abs() + 1.0, 0.5)
    w = on_grid(gate_weight(gen, c), 0.125) + on_grid(torch.tensor(c.offset / c.dim), 0.125)
    return x, w


def scores_of(impl, c, gen):
    if c.params.get("offset"):
        x, w = large_logits_inputs(gen, c)
    else:
        x, w = tokens(gen, c), gate_weight(gen, c)
    return impl.router_scores(x, w, c.func)


@scores.check(case(b=2, t=5, dim=6, e=4, func="softmax"), case(b=2, t=5, dim=6, e=4, func="sigmoid"),
              case(b=1, t=1, dim=3, e=7, func="softmax"), case(n=6, dim=4, e=5, func="sigmoid"),
              case(b=3, t=2, dim=5, e=6, func="softmax", dtype="float64"))
def scores_random(impl, c, gen):
    """softmax over the experts (each token's scores sum to 1) or an independent sigmoid per expert"""
    return scores_of(impl, c, gen)


@scores.check(case(b=2, t=3, dim=4, e=5, func="softmax", offset=2000.0))
def large_logits(impl, c, gen):
    """logits in the thousands: the softmax must not overflow (subtract the max, or use torch.softmax)"""
    return scores_of(impl, c, gen)


@scores.check(case(b=2, t=4, dim=6, e=5, func="softmax", dtype="bfloat16"),
              case(b=2, t=4, dim=6, e=5, func="sigmoid", dtype="bfloat16"), tolerances=BF16_LOGITS)
def bfloat16_tokens(impl, c, gen):
    """bfloat16 tokens and weight give float32 scores, as DeepSeek computes routing probabilities"""
    return scores_of(impl, c, gen)


@scores.check(case(b=3, t=4, dim=5, e=6, func="sigmoid", noncontiguous=True),
              case(b=2, t=3, dim=7, e=3, func="sigmoid", dtype="float64"),
              case(n=5, dim=3, e=8, func="softmax", offset=-3000.0),
              case(b=2, t=2, dim=4, e=4, func="softmax", dtype="bfloat16"), hidden=True, tolerances=BF16_LOGITS)
def hidden_scores(impl, c, gen):
    """non-contiguous tokens, float64 sigmoid, very negative logits, bfloat16"""
    return scores_of(impl, c, gen)


def _logits(x, w):
    return (x @ w.T).float() if x.dtype != torch.float64 else x @ w.T


@scores.misconception("softmax_over_tokens", "The softmax must run over the experts, the last axis (dim=-1): each "
                      "token's scores sum to 1. Yours normalises over the tokens.")
def _(x, gate_weight, score_func="softmax"):
    z = _logits(x, gate_weight)
    return torch.softmax(z, dim=-2) if score_func == "softmax" else torch.sigmoid(z)


@scores.misconception("always_softmax", "score_func decides the scoring: 'softmax' normalises over the experts, "
                      "'sigmoid' scores each expert on its own (torch.sigmoid, no normalisation).")
def _(x, gate_weight, score_func="softmax"):
    return torch.softmax(_logits(x, gate_weight), dim=-1)


@scores.misconception("sigmoid_normalised", "Sigmoid scores are not normalised here: each is sigmoid(logit) on its "
                      "own. (DeepSeek-V3 renormalises only the top-k weights, later, in the gate.)")
def _(x, gate_weight, score_func="softmax"):
    z = _logits(x, gate_weight)
    if score_func == "softmax":
        return torch.softmax(z, dim=-1)
    s = torch.sigmoid(z)
    return s / s.sum(dim=-1, keepdim=True)


@scores.misconception("naive_exp", "exp() of large logits overflows to inf (inf/inf = NaN). Subtract each token's "
                      "largest logit before exponentiating (episode 2's softmax, or torch.softmax).")
def _(x, gate_weight, score_func="softmax"):
    z = _logits(x, gate_weight)
    if score_func == "sigmoid":
        return torch.sigmoid(z)
    e = torch.exp(z)
    return e / e.sum(dim=-1, keepdim=True)


@scores.misconception("input_dtype", "Routing probabilities are computed in float32 even for bfloat16 tokens (as "
                      "DeepSeek does): cast the logits to float32 (float64 may stay float64) before the "
                      "softmax/sigmoid.")
def _(x, gate_weight, score_func="softmax"):
    z = x @ gate_weight.T
    return torch.softmax(z, dim=-1) if score_func == "softmax" else torch.sigmoid(z)


# --- top_k_routing ---------------------------------------------------------------------------------------

top_k = EPISODE.exercise("top_k_routing")


def routing_scores(gen, c):
    """``(b, t, n_experts)`` router scores: a softmax over the experts, or sigmoids."""
    z = randn(gen, c.b, c.t, c.e, dtype=dtype_of(c), scale=2.0)
    s = torch.softmax(z, dim=-1) if c.params.get("func", "softmax") == "softmax" else torch.sigmoid(z)
    return noncontiguous(s) if c.params.get("noncontiguous") else s


def top_k_of(impl, c, gen):
    return routing(impl.top_k_routing(routing_scores(gen, c), c.k, c.normalize))


@top_k.check(case(b=2, t=5, e=6, k=2, normalize=False), case(b=2, t=5, e=6, k=2, normalize=True),
             case(b=1, t=1, e=4, k=1, normalize=True), case(b=3, t=2, e=7, k=3, normalize=True, func="sigmoid"),
             case(b=2, t=3, e=5, k=2, normalize=False, dtype="float64"))
def top_k_random(impl, c, gen):
    """the k largest scores of each token and their expert ids (renormalised to sum to 1 if asked)"""
    return top_k_of(impl, c, gen)


@top_k.check(case(b=3, t=4, e=8, k=3, normalize=True, noncontiguous=True),
             case(b=2, t=3, e=5, k=5, normalize=True, dtype="float64"),
             case(b=2, t=6, e=9, k=4, normalize=False, func="sigmoid"), hidden=True)
def hidden_top_k(impl, c, gen):
    """non-contiguous scores, k = n_experts, sigmoid scores"""
    return top_k_of(impl, c, gen)


@top_k.misconception("normalize_ignored", "With normalize=True divide the k kept weights by their sum, so each "
                     "token's weights add up to 1.")
def _(scores, k, normalize=False):
    return scores.topk(k, dim=-1)


@top_k.misconception("always_normalized", "Renormalise only when normalize=True; otherwise the weights are the "
                     "kept scores themselves.")
def _(scores, k, normalize=False):
    w, i = scores.topk(k, dim=-1)
    return w / w.sum(dim=-1, keepdim=True), i


@top_k.misconception("softmax_of_top_k", "Renormalising means dividing the kept scores by their sum, not taking a "
                     "softmax of them (that would exponentiate scores that are already probabilities).")
def _(scores, k, normalize=False):
    w, i = scores.topk(k, dim=-1)
    return (torch.softmax(w, dim=-1) if normalize else w), i


@top_k.misconception("smallest_k", "You kept the k *smallest* scores: torch.topk returns the largest by default "
                     "(largest=True); a token goes to the experts it scores highest.")
def _(scores, k, normalize=False):
    w, i = scores.topk(k, dim=-1, largest=False)
    return (w / w.sum(dim=-1, keepdim=True) if normalize else w), i


# --- DenseMoE ----------------------------------------------------------------------------------------------

dense = EPISODE.exercise("DenseMoE", method="forward")


def dense_output(impl, c, gen):
    layer = build(impl.DenseMoE, c.dim, c.inter_dim, c.e, gen=gen).to(dtype_of(c))
    return layer(tokens(gen, c))


@dense.check(case(b=2, t=5, dim=6, inter_dim=4, e=3), case(b=1, t=1, dim=5, inter_dim=3, e=4),
             case(n=7, dim=4, inter_dim=6, e=5), case(b=3, t=2, dim=6, inter_dim=5, e=4, dtype="float64"))
def forward_random(impl, c, gen):
    """Σ_e softmax(gate(x))_e · expert_e(x) for every token"""
    return dense_output(impl, c, gen)


@dense.check(case(b=3, t=4, dim=5, inter_dim=3, e=6, noncontiguous=True),
             case(b=2, t=3, dim=7, inter_dim=4, e=2, scale=6.0),
             case(b=2, t=5, dim=4, inter_dim=8, e=3, dtype="float64"), hidden=True)
def forward_hidden(impl, c, gen):
    """non-contiguous and large tokens, float64"""
    return dense_output(impl, c, gen)


def _mix(self, x, probs):
    outputs = torch.stack([e(x) for e in self.experts], dim=-2)
    return (probs.unsqueeze(-1) * outputs).sum(dim=-2)


@dense.misconception("unweighted_average", "The experts' outputs are weighted by the router: multiply expert e's "
                     "output by softmax(gate(x))[..., e] before summing, instead of averaging them equally.")
def _(self, x):
    return _mix(self, x, torch.full((*x.shape[:-1], len(self.experts)), 1.0 / len(self.experts), dtype=x.dtype))


@dense.misconception("softmax_over_tokens", "The router's softmax runs over the experts (dim=-1): each token's "
                     "weights sum to 1. Yours normalises across tokens.")
def _(self, x):
    return _mix(self, x, torch.softmax(self.gate(x), dim=-2))


@dense.misconception("sigmoid_weights", "A soft mixture weights the experts with a softmax over the experts (weights "
                     "summing to 1), not with independent sigmoids.")
def _(self, x):
    return _mix(self, x, torch.sigmoid(self.gate(x)))


@dense.misconception("top_1_only", "A *dense* mixture uses every expert, each weighted by its softmax score; keeping "
                     "only the best expert is the sparse routing of episode 19.")
def _(self, x):
    probs = torch.softmax(self.gate(x), dim=-1)
    return _mix(self, x, probs * torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).to(x.dtype))
