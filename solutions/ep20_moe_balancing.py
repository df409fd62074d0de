"""Episode 20 — Mixture of Experts: Balancing Techniques.

A router left alone tends to collapse: a few experts win most tokens, get
trained more, and win even more. Each balancing technique below follows its paper.

Auxiliary losses (added to the training loss, minimal when routing is uniform):

* ``importance_cv_loss`` — Shazeer et al. 2017: the squared coefficient of
  variation of each expert's *importance* (its summed gate values);
* ``switch_load_balancing_loss`` — Switch Transformer (Fedus et al. 2021):
  ``N · Σ_i f_i · P_i``, ``f_i`` the fraction of tokens sent to expert ``i``,
  ``P_i`` its mean router probability; 1 when uniform;
* ``expert_balance_loss`` — DeepSeek-V2 expert-level:
  ``α · Σ_i f_i · P_i`` with ``f_i = N/(K·T) · count_i``; ``α`` when uniform;
* ``sequence_balance_loss`` — DeepSeek-V3 sequence-wise: the same on the
  scores *normalised* per token, computed per sequence and averaged.

Routing mechanics: ``noisy_top_k_gating`` (Shazeer et al.: tunable Gaussian
noise before the top-k, then a softmax over the kept logits), ``capacity_mask``
(each expert serves at most ``capacity`` assignments; the rest are dropped in
token order), and DeepSeek-V3's auxiliary-loss-free balancing,
``update_routing_bias``: after each step, each expert's selection bias moves by
``±gamma`` towards balance (up if it was underloaded, down if overloaded).

The demonstration :func:`bias_balancing_demo` routes fresh batches of tokens
through a gate skewed towards 2 of 8 experts, with no auxiliary loss, and
updates only the bias (gamma 0.002). The max/mean expert load per step::

    step   max/mean load
       0   2.79  ####################################
      10   2.60  ################################
      25   2.38  ############################
      50   1.99  ####################
      75   1.57  ###########
     100   1.07  #
     150   1.16  ###
     200   1.10  ##
           (one # per 0.05 above 1.00; 1.00 is perfect balance)

With ``gamma = 0`` (no update) it stays near 2.8. DeepSeek-V3 uses
``gamma = 0.001`` over many more steps.

Shapes: ``T`` tokens (leading dims flattened), ``N`` routed experts, ``K`` (or
``k``) experts per token, ``b`` sequences of ``t`` tokens.
"""

import math

import torch

from .config import DeepSeekConfig
from .ep19_moe import Gate, expert_token_counts


def importance_cv_loss(router_probs: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation of the experts' importance (Shazeer et al. 2017).

    ``importance_i = Σ_tokens router_probs[:, i]``;
    ``loss = Var(importance) / Mean(importance)²`` with the population variance
    (divide by ``N``, as the authors' ``cv_squared``). 0 when every expert is
    equally important. The paper multiplies it by a weight ``w_importance``;
    the caller does that.

    Args:
        router_probs (torch.Tensor): ``(..., N)`` gate values of every token, float
            (leading dims are all tokens).

    Returns:
        torch.Tensor: Scalar (0-dim), dtype of ``router_probs``.

    Example:
        >>> importance_cv_loss(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
        tensor(0.)
        >>> importance_cv_loss(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))  # importance (2, 0)
        tensor(1.)
    """
    ### BEGIN SOLUTION
    importance = router_probs.reshape(-1, router_probs.shape[-1]).sum(dim=0)
    return importance.var(correction=0) / importance.mean() ** 2
    ### END SOLUTION


def switch_load_balancing_loss(router_probs: torch.Tensor, indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Switch Transformer's load-balancing loss ``N · Σ_i f_i · P_i``.

    ``f_i`` = (tokens dispatched to expert ``i``) / T, from the routing decisions
    (a count: no gradient flows through it); ``P_i`` = mean over the tokens of
    ``router_probs[:, i]`` (the gradient flows through ``P``). Minimal, 1, when
    routing is uniform (``f_i = P_i = 1/N``). The paper multiplies it by ``α``
    (1e-2); the caller does that. For top-k indices ``f_i`` counts every slot,
    so uniform routing gives ``k``.

    Args:
        router_probs (torch.Tensor): ``(..., N)`` softmax router probabilities (leading dims = T tokens).
        indices (torch.Tensor): ``(...)`` top-1 expert ids (Switch), or ``(..., k)``, int64.
        n_experts (int): ``N``.

    Returns:
        torch.Tensor: Scalar (0-dim), dtype of ``router_probs``.

    Example:
        >>> probs = torch.full((4, 2), 0.5)
        >>> switch_load_balancing_loss(probs, torch.tensor([0, 1, 0, 1]), 2)
        tensor(1.)
    """
    ### BEGIN SOLUTION
    probs = router_probs.reshape(-1, n_experts)
    f = expert_token_counts(indices, n_experts).to(probs.dtype) / probs.shape[0]
    return n_experts * (f * probs.mean(dim=0)).sum()
    ### END SOLUTION


def expert_balance_loss(scores: torch.Tensor, indices: torch.Tensor, n_experts: int, top_k: int,
                        alpha: float) -> torch.Tensor:
    """DeepSeek-V2's expert-level balance loss ``α · Σ_i f_i · P_i``.

    ``f_i = N / (K·T) · count_i`` (``count_i`` = tokens that selected expert
    ``i``; no gradient) and ``P_i = (1/T) Σ_t s_{i,t}`` (the mean affinity).
    Uniform routing gives ``f_i = 1`` and ``P_i = 1/N``: the loss is ``α``.

    Args:
        scores (torch.Tensor): ``(..., N)`` affinities ``s_{i,t}`` (softmax
            scores), float; the leading dims are the ``T`` tokens (the paper: one sequence).
        indices (torch.Tensor): ``(..., K)`` int64 selected experts of the same tokens.
        n_experts (int): ``N`` (DeepSeek-V2's ``N'``: routed experts).
        top_k (int): ``K`` (``K'``: routed experts per token).
        alpha (float): Balance factor ``α_1``.

    Returns:
        torch.Tensor: Scalar (0-dim), dtype of ``scores``.

    Example:
        >>> scores = torch.full((4, 4), 0.25)
        >>> expert_balance_loss(scores, torch.tensor([[0, 1], [2, 3], [0, 1], [2, 3]]), 4, 2, alpha=0.003)
        tensor(0.0030)
    """
    ### BEGIN SOLUTION
    s = scores.reshape(-1, n_experts)
    n_tokens = s.shape[0]
    f = expert_token_counts(indices, n_experts).to(s.dtype) * (n_experts / (top_k * n_tokens))
    return alpha * (f * s.mean(dim=0)).sum()
    ### END SOLUTION


def sequence_balance_loss(scores: torch.Tensor, indices: torch.Tensor, n_experts: int, top_k: int,
                          alpha: float) -> torch.Tensor:
    """DeepSeek-V3's complementary sequence-wise balance loss, averaged over the batch.

    For each sequence of ``T`` tokens: ``α · Σ_i f_i · P_i`` with
    ``f_i = N / (K·T) · count_i`` and ``P_i = (1/T) Σ_t s'_{i,t}``, where
    ``s'_{i,t} = s_{i,t} / Σ_j s_{j,t}`` are the (sigmoid) affinities
    *normalised over the experts* for each token. The batch's loss is the mean
    over its sequences. Uniform routing in every sequence gives ``α``.

    Args:
        scores (torch.Tensor): ``(b, t, N)`` raw affinities ``s_{i,t}`` (sigmoid scores), float.
        indices (torch.Tensor): ``(b, t, K)`` int64 selected experts.
        n_experts (int): ``N_r``.
        top_k (int): ``K_r``.
        alpha (float): Balance factor ``α`` (tiny in DeepSeek-V3: 0.0001).

    Returns:
        torch.Tensor: Scalar (0-dim), dtype of ``scores``.

    Example:
        >>> scores = torch.full((2, 2, 4), 0.3)     # normalised: 0.25 each
        >>> indices = torch.tensor([[[0, 1], [2, 3]], [[3, 1], [2, 0]]])
        >>> sequence_balance_loss(scores, indices, 4, 2, alpha=0.5)
        tensor(0.5000)
    """
    ### BEGIN SOLUTION
    normalised = scores / scores.sum(dim=-1, keepdim=True)
    per_sequence = [expert_balance_loss(normalised[i], indices[i], n_experts, top_k, alpha)
                    for i in range(scores.shape[0])]
    return torch.stack(per_sequence).mean()
    ### END SOLUTION


def noisy_top_k_gating(x: torch.Tensor, w_gate: torch.Tensor, w_noise: torch.Tensor, k: int,
                       noise: torch.Tensor | None) -> torch.Tensor:
    """Noisy top-k gating (Shazeer et al. 2017), with the Gaussian noise passed in.

    ``H(x) = x W_gateᵀ + noise · softplus(x W_noiseᵀ)``; the ``k`` largest
    entries of ``H`` are kept and the others set to ``-inf``; ``G(x) =
    softmax`` of the result: each token's ``k`` gates sum to 1 and the other
    ``N - k`` are exactly 0. Passing the noise (instead of drawing it inside)
    makes the function deterministic; ``noise=None`` (inference) adds none.

    Args:
        x (torch.Tensor): ``(..., dim)`` tokens, float.
        w_gate (torch.Tensor): ``(N, dim)`` gate weight (``nn.Linear`` layout).
        w_noise (torch.Tensor): ``(N, dim)`` noise weight.
        k (int): Experts kept per token.
        noise (torch.Tensor, optional): ``(..., N)`` standard-normal samples, or None.

    Returns:
        torch.Tensor: ``(..., N)`` gates in the dtype of ``x``.

    Example:
        >>> x = torch.tensor([[1.0, 0.0]])
        >>> w = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
        >>> noisy_top_k_gating(x, w, torch.zeros(3, 2), k=2, noise=None)
        tensor([[0.2689, 0.7311, 0.0000]])
    """
    ### BEGIN SOLUTION
    logits = x @ w_gate.T
    if noise is not None:
        logits = logits + noise * torch.nn.functional.softplus(x @ w_noise.T)
    top = logits.topk(k, dim=-1)
    kept = torch.full_like(logits, float("-inf")).scatter(-1, top.indices, top.values)
    return torch.softmax(kept, dim=-1)
    ### END SOLUTION


def capacity_mask(indices: torch.Tensor, n_experts: int, capacity_factor: float) -> torch.Tensor:
    """Which routing assignments an expert with a fixed capacity can serve.

    Each expert takes at most ``capacity = ceil(capacity_factor · A / n_experts)``
    assignments, ``A = indices.numel()`` (T tokens times k slots): its fair share
    times the capacity factor (the Switch Transformer / GShard buffer, rounded
    up). Assignments are served in token order — row-major over ``indices``:
    token 0's slots, then token 1's, … — and those that find their expert full
    are dropped (the token skips that expert).

    Args:
        indices (torch.Tensor): ``(T,)`` or ``(T, k)`` (any shape) int64 chosen experts.
        n_experts (int): Number of experts.
        capacity_factor (float): Buffer over the fair share (1.0 = exactly fair).

    Returns:
        torch.Tensor: Boolean, shape of ``indices``; True = kept, False = dropped.

    Example:
        >>> capacity_mask(torch.tensor([0, 0, 0, 1]), n_experts=2, capacity_factor=1.0)  # capacity 2
        tensor([ True,  True, False,  True])
    """
    ### BEGIN SOLUTION
    flat = indices.flatten()
    capacity = math.ceil(capacity_factor * flat.numel() / n_experts)
    one_hot = torch.nn.functional.one_hot(flat, n_experts)  # (A, N)
    rank = one_hot.cumsum(dim=0).gather(1, flat.unsqueeze(1)).squeeze(1)  # 1 for an expert's first assignment
    return (rank <= capacity).view(indices.shape)
    ### END SOLUTION


def update_routing_bias(bias: torch.Tensor, expert_load: torch.Tensor, gamma: float) -> torch.Tensor:
    """DeepSeek-V3's auxiliary-loss-free balancing step: ``bias + gamma · sign(mean load − load)``.

    An overloaded expert (load above the mean) has its bias lowered by
    ``gamma``, an underloaded one raised by ``gamma``, one exactly at the mean
    kept. The bias only affects which experts are *selected* (episode 19), never
    the weights. The input is left unchanged.

    Args:
        bias (torch.Tensor): ``(N,)`` current selection bias (float32 in DeepSeek-V3).
        expert_load (torch.Tensor): ``(N,)`` tokens each expert received in the
            step (e.g. :func:`expert_token_counts`), int or float.
        gamma (float): Bias update speed (DeepSeek-V3: 0.001).

    Returns:
        torch.Tensor: ``(N,)`` new bias, dtype of ``bias``.

    Example:
        >>> update_routing_bias(torch.zeros(3), torch.tensor([5, 1, 3]), gamma=0.1)
        tensor([-0.1000,  0.1000,  0.0000])
    """
    ### BEGIN SOLUTION
    load = expert_load.to(bias.dtype)
    return bias + gamma * torch.sign(load.mean() - load)
    ### END SOLUTION


def bias_balancing_demo(steps: int = 200, gamma: float = 0.002, n_tokens: int = 2048,
                        seed: int = 0) -> list[float]:
    """Auxiliary-loss-free balancing at work: max/mean expert load of a skewed router, step by step.

    An episode 19 :class:`Gate` (8 experts in 4 groups, 2 groups kept, top-2,
    sigmoid with bias) whose weights favour experts 0 and 1 routes a fresh batch
    of ``n_tokens`` tokens per step; after each step the bias is updated with
    :func:`update_routing_bias` from the step's :func:`expert_token_counts`.
    Nothing else is trained.

    Args:
        steps (int): Bias updates. Defaults to 200.
        gamma (float): Update speed. Defaults to 0.002.
        n_tokens (int): Tokens per step. Defaults to 2048.
        seed (int): Seed of the weights and tokens. Defaults to 0.

    Returns:
        list[float]: ``steps + 1`` values of max load / mean load, before each
        update and after the last (1.0 is perfect balance).
    """
    dim, n_experts = 16, 8
    gen = torch.Generator().manual_seed(seed)
    gate = Gate(DeepSeekConfig(dim=dim, n_routed_experts=n_experts, n_activated_experts=2,
                               n_expert_groups=4, n_limited_groups=2, score_func="sigmoid", gate_bias=True))
    direction = torch.randn(dim, generator=gen)
    direction /= direction.norm()
    ratios = []
    with torch.no_grad():
        gate.weight.copy_(torch.randn(n_experts, dim, generator=gen) / math.sqrt(dim))
        gate.weight[:2] += 2.0 * direction  # tokens lean towards `direction`, and so do experts 0 and 1
        for _ in range(steps + 1):
            tokens = torch.randn(n_tokens, dim, generator=gen) + direction
            load = expert_token_counts(gate(tokens)[1], n_experts)
            ratios.append((load.max() / load.float().mean()).item())
            gate.bias.copy_(update_routing_bias(gate.bias, load, gamma))
    return ratios
