"""Checks for episode 20: balancing losses, noisy top-k gating, expert capacity and DeepSeek-V3's bias update."""

import math

import torch

from ..probing import dtype_of, noncontiguous, randint, randn
from ..registry import Episode, case

EPISODE = Episode("ep20", "Mixture of Experts – Balancing Techniques", video="https://youtu.be/nRadcspta_8",
                  module="ep20_moe_balancing")


def router_probs(gen, c):
    """``(lead…, e)`` router probabilities: a softmax of skewed logits (``uniform``: all ``1/e``)."""
    if c.params.get("uniform"):
        return torch.full((*c.lead, c.e), 1.0 / c.e, dtype=dtype_of(c))
    skew = torch.linspace(c.params.get("skew", 1.0), 0.0, c.e, dtype=torch.float64)  # expert 0 favoured
    probs = torch.softmax(randn(gen, *c.lead, c.e, dtype=torch.float64) + skew, dim=-1).to(dtype_of(c))
    return noncontiguous(probs) if c.params.get("noncontiguous") else probs


def round_robin(c):
    """``(lead…, k)`` ids spreading the tokens' slots evenly over the experts (token j takes j·k, j·k+1, …)."""
    n = math.prod(c.lead)
    return (torch.arange(n * c.k) % c.e).view(*c.lead, c.k)


def chosen(probs, c):
    """The top-``k`` experts of each token (``round_robin`` for uniform cases, whose scores all tie)."""
    if c.params.get("uniform"):
        return round_robin(c)
    return probs.topk(c.k, dim=-1).indices


def with_gradient(loss_fn, probs):
    """The loss and its gradient with respect to the probabilities (probes run without gradients otherwise)."""
    with torch.enable_grad():
        probs = probs.detach().requires_grad_(True)
        loss = loss_fn(probs)
        if not (isinstance(loss, torch.Tensor) and loss.requires_grad):
            return {"loss": loss, "grad": None}
        loss.backward()
    return {"loss": loss.detach(), "grad": probs.grad}


# --- importance_cv_loss ------------------------------------------------------------------------------------

importance = EPISODE.exercise("importance_cv_loss")


@importance.check(case(lead=[10], e=4), case(lead=[2, 5], e=6, skew=3.0), case(lead=[6], e=3, uniform=True),
                  case(lead=[1], e=5), case(lead=[12], e=8, dtype="float64"))
def cv_squared(impl, c, gen):
    """Var/Mean² of the per-expert summed probabilities (0 when uniform), for (T, N) and (b, t, N) inputs"""
    return impl.importance_cv_loss(router_probs(gen, c))


@importance.check(case(lead=[3, 7], e=5, noncontiguous=True), case(lead=[40], e=16, skew=6.0, dtype="float64"),
                  hidden=True)
def hidden_cv_squared(impl, c, gen):
    """non-contiguous probabilities, many tokens, strong skew"""
    return impl.importance_cv_loss(router_probs(gen, c))


def _importance(p):
    return p.reshape(-1, p.shape[-1]).sum(dim=0)


@importance.misconception("unbiased_variance", "Use the population variance (divide by N, the number of experts): "
                          "x.var(correction=0) — torch.var divides by N - 1 by default.")
def _(router_probs):
    imp = _importance(router_probs)
    return imp.var() / imp.mean() ** 2


@importance.misconception("cv_not_squared", "The loss is the *squared* coefficient of variation: Var / Mean² "
                          "(or (std / mean)²).")
def _(router_probs):
    imp = _importance(router_probs)
    return imp.std(correction=0) / imp.mean()


@importance.misconception("summed_over_experts", "An expert's importance sums its probabilities over the *tokens* "
                          "(every axis but the last); summing over the experts gives 1 for every token.")
def _(router_probs):
    imp = router_probs.sum(dim=-1).flatten()
    return imp.var(correction=0) / imp.mean() ** 2


# --- switch_load_balancing_loss ------------------------------------------------------------------------------

switch = EPISODE.exercise("switch_load_balancing_loss")


def switch_loss(impl, c, gen):
    probs = router_probs(gen, c)
    indices = chosen(probs, c)
    if c.k == 1 and not c.params.get("keep_k_axis"):
        indices = indices.squeeze(-1)  # Switch's top-1 ids, (T,)
    return with_gradient(lambda p: impl.switch_load_balancing_loss(p, indices, c.e), probs)


@switch.check(case(lead=[10], e=4, k=1), case(lead=[2, 6], e=5, k=1, skew=2.0), case(lead=[8], e=4, k=1, uniform=True),
              case(lead=[9], e=6, k=2), case(lead=[7], e=3, k=1, dtype="float64"))
def switch_loss_and_gradient(impl, c, gen):
    """N·Σ f_i·P_i (1 when uniform) and its gradient, which flows through P only"""
    return switch_loss(impl, c, gen)


@switch.check(case(lead=[3, 5], e=8, k=1, noncontiguous=True), case(lead=[20], e=6, k=1, keep_k_axis=True, skew=4.0),
              case(lead=[11], e=7, k=3, dtype="float64"), hidden=True)
def hidden_switch(impl, c, gen):
    """non-contiguous probabilities, (T, 1) ids, top-3 ids"""
    return switch_loss(impl, c, gen)


def _fraction(indices, n_experts, n_tokens, dtype):
    return torch.bincount(indices.flatten(), minlength=n_experts).to(dtype) / n_tokens


@switch.misconception("missing_n", "Multiply by the number of experts N: N·Σ f_i·P_i is 1 for uniform routing "
                      "whatever N is.")
def _(router_probs, indices, n_experts):
    p = router_probs.reshape(-1, n_experts)
    return (_fraction(indices, n_experts, p.shape[0], p.dtype) * p.mean(0)).sum()


@switch.misconception("f_from_probabilities", "f_i is the fraction of tokens *dispatched* to expert i (count the "
                      "indices), not the mean probability: that would be P_i again (and carry a gradient).")
def _(router_probs, indices, n_experts):
    p = router_probs.reshape(-1, n_experts)
    return n_experts * (p.mean(0) * p.mean(0)).sum()


@switch.misconception("f_not_a_fraction", "Divide the token counts by the number of tokens T: f_i is a fraction.")
def _(router_probs, indices, n_experts):
    p = router_probs.reshape(-1, n_experts)
    return n_experts * (_fraction(indices, n_experts, 1, p.dtype) * p.mean(0)).sum()


@switch.misconception("p_summed", "P_i is the *mean* router probability of expert i over the tokens, not the sum.")
def _(router_probs, indices, n_experts):
    p = router_probs.reshape(-1, n_experts)
    return n_experts * (_fraction(indices, n_experts, p.shape[0], p.dtype) * p.sum(0)).sum()


# --- expert_balance_loss ---------------------------------------------------------------------------------------

expert_level = EPISODE.exercise("expert_balance_loss")


def expert_loss(impl, c, gen):
    scores = router_probs(gen, c)
    indices = chosen(scores, c)
    return with_gradient(lambda s: impl.expert_balance_loss(s, indices, c.e, c.k, c.alpha), scores)


@expert_level.check(case(lead=[12], e=8, k=2, alpha=0.01), case(lead=[2, 5], e=6, k=3, alpha=0.003, skew=2.0),
                    case(lead=[8], e=4, k=2, alpha=0.3, uniform=True), case(lead=[5], e=5, k=1, alpha=1.0),
                    case(lead=[9], e=6, k=2, alpha=0.02, dtype="float64"))
def expert_loss_and_gradient(impl, c, gen):
    """α·Σ f_i·P_i with f_i = N/(K·T)·count_i (α when uniform), and its gradient"""
    return expert_loss(impl, c, gen)


@expert_level.check(case(lead=[4, 6], e=10, k=4, alpha=0.003, noncontiguous=True),
                    case(lead=[30], e=16, k=6, alpha=0.01, skew=5.0, dtype="float64"), hidden=True)
def hidden_expert_loss(impl, c, gen):
    """non-contiguous scores, many experts, strong skew"""
    return expert_loss(impl, c, gen)


def _expert_loss(scores, indices, n_experts, alpha, f_scale, p_reduce="mean"):
    s = scores.reshape(-1, n_experts)
    counts = torch.bincount(indices.flatten(), minlength=n_experts).to(s.dtype)
    p = s.mean(0) if p_reduce == "mean" else s.sum(0)
    return alpha * (counts * f_scale(s.shape[0]) * p).sum()


@expert_level.misconception("f_without_n_over_k", "DeepSeek-V2 scales the counts by N/(K·T), not 1/T, so that "
                            "f_i = 1 for perfectly uniform routing.")
def _(scores, indices, n_experts, top_k, alpha):
    return _expert_loss(scores, indices, n_experts, alpha, lambda t: 1.0 / t)


@expert_level.misconception("k_missing", "f_i = N/(K·T)·count_i: divide by K too — each token is counted once per "
                            "chosen expert, K times in all.")
def _(scores, indices, n_experts, top_k, alpha):
    return _expert_loss(scores, indices, n_experts, alpha, lambda t: n_experts / t)


@expert_level.misconception("alpha_ignored", "Multiply the sum by the balance factor alpha.")
def _(scores, indices, n_experts, top_k, alpha):
    return _expert_loss(scores, indices, n_experts, 1.0, lambda t: n_experts / (top_k * t))


@expert_level.misconception("p_summed", "P_i is the *mean* affinity of expert i over the T tokens, (1/T)·Σ_t s_i,t.")
def _(scores, indices, n_experts, top_k, alpha):
    return _expert_loss(scores, indices, n_experts, alpha, lambda t: n_experts / (top_k * t), p_reduce="sum")


# --- sequence_balance_loss ---------------------------------------------------------------------------------------

sequence_level = EPISODE.exercise("sequence_balance_loss")


def sigmoid_scores(gen, c):
    """``(b, t, e)`` sigmoid affinities, each sequence skewed towards a different expert."""
    if c.params.get("uniform"):
        return torch.full((c.b, c.t, c.e), 0.3, dtype=dtype_of(c))
    favoured = randint(gen, c.e, c.b)
    skew = 2.0 * torch.nn.functional.one_hot(favoured, c.e).to(torch.float64).unsqueeze(1)  # (b, 1, e)
    s = torch.sigmoid(randn(gen, c.b, c.t, c.e, dtype=torch.float64) + skew).to(dtype_of(c))
    return noncontiguous(s) if c.params.get("noncontiguous") else s


def sequence_loss(impl, c, gen):
    scores = sigmoid_scores(gen, c)
    if c.params.get("uniform"):
        indices = (torch.arange(c.t * c.k) % c.e).view(1, c.t, c.k).expand(c.b, -1, -1)
    else:
        indices = scores.topk(c.k, dim=-1).indices
    return with_gradient(lambda s: impl.sequence_balance_loss(s, indices, c.e, c.k, c.alpha), scores)


@sequence_level.check(case(b=2, t=6, e=5, k=2, alpha=0.01), case(b=3, t=4, e=8, k=3, alpha=0.001),
                      case(b=2, t=4, e=4, k=2, alpha=0.3, uniform=True), case(b=1, t=1, e=6, k=2, alpha=1.0),
                      case(b=2, t=5, e=7, k=2, alpha=0.02, dtype="float64"))
def sequence_loss_and_gradient(impl, c, gen):
    """per sequence α·Σ f_i·P_i on scores normalised per token, averaged over the batch (α when uniform)"""
    return sequence_loss(impl, c, gen)


@sequence_level.check(case(b=4, t=5, e=6, k=2, alpha=0.003, noncontiguous=True),
                      case(b=3, t=9, e=12, k=4, alpha=0.0001, dtype="float64"), hidden=True)
def hidden_sequence_loss(impl, c, gen):
    """non-contiguous scores, more experts, DeepSeek-V3's tiny alpha"""
    return sequence_loss(impl, c, gen)


def _sequence_loss(scores, indices, n_experts, top_k, alpha, normalise_dim=-1, pooled=False, reduce="mean"):
    from solutions.ep20_moe_balancing import expert_balance_loss

    s = scores / scores.sum(dim=normalise_dim, keepdim=True) if normalise_dim is not None else scores
    if pooled:
        return expert_balance_loss(s, indices, n_experts, top_k, alpha)
    per_sequence = torch.stack([expert_balance_loss(s[i], indices[i], n_experts, top_k, alpha)
                                for i in range(s.shape[0])])
    return per_sequence.mean() if reduce == "mean" else per_sequence.sum()


@sequence_level.misconception("scores_not_normalised", "DeepSeek-V3 normalises each token's sigmoid scores over the "
                              "experts first: s' = s / s.sum(-1, keepdim=True), then P_i is the mean of s'.")
def _(scores, indices, n_experts, top_k, alpha):
    return _sequence_loss(scores, indices, n_experts, top_k, alpha, normalise_dim=None)


@sequence_level.misconception("normalised_over_tokens", "Normalise each token's scores over the experts (dim=-1), "
                              "not each expert's scores over the tokens.")
def _(scores, indices, n_experts, top_k, alpha):
    return _sequence_loss(scores, indices, n_experts, top_k, alpha, normalise_dim=-2)


@sequence_level.misconception("batch_pooled", "The loss is sequence-wise: compute f and P within each sequence "
                              "(T = its tokens) and average the per-sequence losses, instead of pooling all the "
                              "batch's tokens.")
def _(scores, indices, n_experts, top_k, alpha):
    return _sequence_loss(scores, indices, n_experts, top_k, alpha, pooled=True)


@sequence_level.misconception("summed_over_batch", "Average the per-sequence losses over the batch (mean), so the "
                              "loss does not grow with the batch size.")
def _(scores, indices, n_experts, top_k, alpha):
    return _sequence_loss(scores, indices, n_experts, top_k, alpha, reduce="sum")


@sequence_level.misconception("alpha_ignored", "Multiply each sequence's sum by the balance factor alpha (tiny in "
                              "DeepSeek-V3: 0.0001).")
def _(scores, indices, n_experts, top_k, alpha):
    return _sequence_loss(scores, indices, n_experts, top_k, 1.0)


# --- noisy_top_k_gating -----------------------------------------------------------------------------------------

noisy = EPISODE.exercise("noisy_top_k_gating")


def gates(impl, c, gen):
    dtype = dtype_of(c)
    x = randn(gen, c.b, c.t, c.dim, dtype=dtype, scale=c.params.get("scale", 1.0))
    w_gate = randn(gen, c.e, c.dim, dtype=dtype) / math.sqrt(c.dim)
    w_noise = randn(gen, c.e, c.dim, dtype=dtype) / math.sqrt(c.dim)
    noise = randn(gen, c.b, c.t, c.e, dtype=dtype) if c.noisy else None
    if c.params.get("noncontiguous"):
        x = noncontiguous(x)
    return impl.noisy_top_k_gating(x, w_gate, w_noise, c.k, noise)


@noisy.check(case(b=2, t=5, dim=6, e=4, k=2, noisy=True), case(b=2, t=5, dim=6, e=4, k=2, noisy=False),
             case(b=1, t=1, dim=3, e=5, k=1, noisy=True), case(b=3, t=2, dim=4, e=6, k=3, noisy=True, dtype="float64"))
def gates_with_given_noise(impl, c, gen):
    """softmax over the top-k of x·W_gᵀ + noise·softplus(x·W_noiseᵀ), exactly 0 elsewhere; no noise when None"""
    return gates(impl, c, gen)


@noisy.check(case(b=2, t=3, dim=5, e=8, k=2, noisy=True, scale=40.0))
def large_logits(impl, c, gen):
    """large logits: the softmax over the kept experts must stay finite"""
    return gates(impl, c, gen)


@noisy.check(case(b=3, t=4, dim=7, e=9, k=4, noisy=True, noncontiguous=True),
             case(b=2, t=3, dim=5, e=3, k=3, noisy=True, dtype="float64"),
             case(b=2, t=2, dim=4, e=6, k=2, noisy=False, scale=60.0), hidden=True)
def hidden_gates(impl, c, gen):
    """non-contiguous tokens, k = N, large noiseless logits"""
    return gates(impl, c, gen)


def _noisy_logits(x, w_gate, w_noise, noise, scale="softplus"):
    logits = x @ w_gate.T
    if noise is None:
        return logits
    if scale == "softplus":
        return logits + noise * torch.nn.functional.softplus(x @ w_noise.T)
    return logits + noise * (x @ w_noise.T if scale == "linear" else 1.0)


def _keep_top_k(logits, k, fill):
    top = logits.topk(k, dim=-1)
    return torch.full_like(logits, fill).scatter(-1, top.indices, top.values)


@noisy.misconception("softmax_before_top_k", "Keep the top k logits first (others -inf), then take the softmax, so "
                     "the k gates sum to 1. A softmax over all experts followed by zeroing leaves them short of 1.")
def _(x, w_gate, w_noise, k, noise=None):
    probs = torch.softmax(_noisy_logits(x, w_gate, w_noise, noise), dim=-1)
    return _keep_top_k(probs, k, 0.0)


@noisy.misconception("noise_not_scaled", "The noise is scaled per expert by softplus(x·W_noiseᵀ) — the learned, "
                     "input-dependent noise level — before it is added to the logits.")
def _(x, w_gate, w_noise, k, noise=None):
    return torch.softmax(_keep_top_k(_noisy_logits(x, w_gate, w_noise, noise, scale="none"), k, float("-inf")), -1)


@noisy.misconception("softplus_missing", "Pass the noise logits through softplus (a positive standard deviation) "
                     "before scaling the noise: noise · softplus(x·W_noiseᵀ).")
def _(x, w_gate, w_noise, k, noise=None):
    return torch.softmax(_keep_top_k(_noisy_logits(x, w_gate, w_noise, noise, scale="linear"), k, float("-inf")), -1)


@noisy.misconception("dropped_set_to_zero", "Set the logits outside the top k to -inf, not 0, before the softmax: "
                     "exp(0) = 1 still gives those experts weight.")
def _(x, w_gate, w_noise, k, noise=None):
    return torch.softmax(_keep_top_k(_noisy_logits(x, w_gate, w_noise, noise), k, 0.0), dim=-1)


# --- capacity_mask ----------------------------------------------------------------------------------------------

capacity = EPISODE.exercise("capacity_mask")


def skewed_indices(gen, c):
    """``(t, k)`` distinct expert ids per token (``(t,)`` when ``k`` is 1), most tokens preferring expert 0."""
    preference = torch.rand(c.t, c.e, generator=gen) + torch.linspace(1.0, 0.0, c.e)
    indices = preference.topk(c.k, dim=-1).indices
    return indices.squeeze(-1) if c.k == 1 else indices


def mask_of(impl, c, gen):
    return impl.capacity_mask(skewed_indices(gen, c), c.e, c.factor)


@capacity.check(case(t=12, e=4, k=2, factor=1.0), case(t=12, e=4, k=2, factor=1.25), case(t=10, e=4, k=1, factor=0.5),
                case(t=1, e=3, k=1, factor=1.0), case(t=9, e=6, k=3, factor=2.0))
def kept_assignments(impl, c, gen):
    """at most ceil(factor · T·k / N) assignments per expert, served in token order"""
    return mask_of(impl, c, gen)


@capacity.check(case(t=20, e=5, k=2, factor=0.75), case(t=16, e=8, k=1, factor=1.5), case(t=7, e=3, k=2, factor=1.125),
                hidden=True)
def hidden_kept_assignments(impl, c, gen):
    """other factors and sizes"""
    return mask_of(impl, c, gen)


def _mask(indices, n_experts, capacity_value, order="token", keep=lambda rank, cap: rank <= cap):
    flat = indices.flatten() if order == "token" else indices.transpose(0, -1).flatten()
    one_hot = torch.nn.functional.one_hot(flat, n_experts)
    rank = one_hot.cumsum(dim=0).gather(1, flat.unsqueeze(1)).squeeze(1)
    kept = keep(rank, capacity_value)
    if order == "token":
        return kept.view(indices.shape)
    return kept.view(indices.transpose(0, -1).shape).transpose(0, -1)


@capacity.misconception("floor_capacity", "Round the capacity up: ceil(capacity_factor · T·k / n_experts); int() "
                        "rounds down and drops one assignment too many.")
def _(indices, n_experts, capacity_factor):
    return _mask(indices, n_experts, int(capacity_factor * indices.numel() / n_experts))


@capacity.misconception("capacity_ignores_k", "Each token makes k assignments: the fair share of an expert is "
                        "T·k / n_experts (indices.numel() / n_experts), not T / n_experts.")
def _(indices, n_experts, capacity_factor):
    return _mask(indices, n_experts, math.ceil(capacity_factor * indices.shape[0] / n_experts))


@capacity.misconception("first_choices_first", "Serve the assignments in token order (token 0's slots, then "
                        "token 1's, …: indices.flatten()), not all first choices before all second choices.")
def _(indices, n_experts, capacity_factor):
    return _mask(indices, n_experts, math.ceil(capacity_factor * indices.numel() / n_experts), order="slot")


@capacity.misconception("off_by_one", "An expert's first `capacity` assignments are kept: with a running count "
                        "starting at 1, keep count <= capacity (with one starting at 0, count < capacity).")
def _(indices, n_experts, capacity_factor):
    return _mask(indices, n_experts, math.ceil(capacity_factor * indices.numel() / n_experts),
                 keep=lambda rank, cap: rank < cap)


# --- update_routing_bias -------------------------------------------------------------------------------------

bias_update = EPISODE.exercise("update_routing_bias")


def loads(gen, c):
    """``(e,)`` expert loads, one of them exactly the mean (its bias must not move)."""
    load = randint(gen, 3 * c.e, c.e)
    rest = int(load[:-1].sum())
    load[0] += (-rest) % (c.e - 1)  # makes the sum of the others divisible by e - 1 …
    load[-1] = int(load[:-1].sum()) // (c.e - 1)  # … so the last load equals the mean
    return load.to(torch.float64) / 8.0 if c.params.get("float_load") else load


def updated_bias(impl, c, gen):
    bias = randn(gen, c.e, dtype=dtype_of(c), scale=0.1)
    load = loads(gen, c)
    new = impl.update_routing_bias(bias, load, c.gamma)
    return {"new_bias": new, "input_bias_after_the_call": bias}


@bias_update.check(case(e=8, gamma=0.001), case(e=5, gamma=0.1), case(e=6, gamma=0.01, float_load=True),
                   case(e=4, gamma=0.05, dtype="float64"))
def bias_step(impl, c, gen):
    """bias + gamma·sign(mean load − load): up when underloaded, down when overloaded, unchanged at the mean"""
    return updated_bias(impl, c, gen)


@bias_update.check(case(e=16, gamma=0.001, float_load=True), case(e=3, gamma=0.5, dtype="float64"), hidden=True)
def hidden_bias_step(impl, c, gen):
    """more experts, large gamma"""
    return updated_bias(impl, c, gen)


def _load(expert_load, bias):
    return expert_load.to(bias.dtype)


@bias_update.misconception("sign_reversed", "An overloaded expert (load above the mean) must become *less* attractive: "
                           "bias + gamma·sign(mean − load), so its bias goes down.")
def _(bias, expert_load, gamma):
    load = _load(expert_load, bias)
    return bias + gamma * torch.sign(load - load.mean())


@bias_update.misconception("proportional_update", "DeepSeek-V3 moves each bias by exactly ±gamma (the *sign* of "
                           "mean − load), not by gamma times the load difference.")
def _(bias, expert_load, gamma):
    load = _load(expert_load, bias)
    return bias + gamma * (load.mean() - load)


@bias_update.misconception("updated_in_place", "Return a new tensor and leave the input bias unchanged "
                           "(bias + …, not bias += …).")
def _(bias, expert_load, gamma):
    load = _load(expert_load, bias)
    bias += gamma * torch.sign(load.mean() - load)
    return bias
