"""Episode 18 — Mixture of Experts (MoE): Introduction.

A mixture-of-experts layer replaces one feed-forward network by many smaller
ones, the *experts*, and a *router* (gate) that decides, per token, how much
each expert contributes:

* an **expert** is an ordinary SwiGLU feed-forward network ``w2(silu(w1 x) * w3 x)``
  (DeepSeek's names: ``w1`` gate, ``w3`` up, ``w2`` down);
* the **router scores** of a token are ``softmax(x Wᵀ)`` over the experts
  (DeepSeek-V2) or ``sigmoid(x Wᵀ)`` per expert (DeepSeek-V3), for a router
  weight ``W`` of shape ``(n_experts, dim)``;
* a **dense** (soft) mixture runs every expert on every token and adds the
  outputs weighted by the softmax scores — simple, but it costs as much as all
  experts together;
* a **sparse** mixture keeps only the ``k`` best-scoring experts per token
  (top-k routing), so a token pays for ``k`` experts however many there are.
  Episode 19 builds DeepSeek's sparse layer from these parts.

Shapes: ``(..., dim)`` tokens (any leading dims, e.g. ``(b, t, dim)``),
``n_experts`` experts, ``k`` experts kept per token, ``inter_dim`` the hidden
width of one expert.
"""

import torch
from torch import nn

from .ep02_building_blocks import MLP, softmax, swiglu


class Expert(MLP):
    """One expert: a SwiGLU feed-forward network (DeepSeek-V3's ``Expert``).

    It has the same parameters as episode 2's :class:`MLP` (which this class
    extends); DeepSeek keeps a separate class for the routed experts.

    Args:
        dim (int): Input and output width.
        inter_dim (int): Hidden width (DeepSeek's ``moe_inter_dim``).

    Attributes:
        w1 (nn.Linear): Gate projection ``dim → inter_dim``, no bias.
        w2 (nn.Linear): Down projection ``inter_dim → dim``, no bias.
        w3 (nn.Linear): Up projection ``dim → inter_dim``, no bias.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``w2(silu(w1 x) * w3 x)``.

        Args:
            x (torch.Tensor): ``(..., dim)`` float, e.g. the ``(n_tokens, dim)``
                tokens routed to this expert.

        Returns:
            torch.Tensor: ``(..., dim)``, dtype of ``x``.

        Example:
            >>> Expert(dim=6, inter_dim=4)(torch.randn(5, 6)).shape
            torch.Size([5, 6])
        """
        raise NotImplementedError("ep18.Expert")


def router_scores(x: torch.Tensor, gate_weight: torch.Tensor, score_func: str = "softmax") -> torch.Tensor:
    """The router's affinity of every token for every expert.

    ``logits = x gate_weightᵀ``; ``"softmax"`` normalises the logits over the
    experts (the scores of a token sum to 1, DeepSeek-V2); ``"sigmoid"`` squashes
    each logit on its own into (0, 1) (DeepSeek-V3). As DeepSeek does, the
    scores are computed in float32 even for bfloat16 inputs (float64 stays
    float64), and the softmax is the numerically stable one.

    Args:
        x (torch.Tensor): ``(..., dim)`` tokens.
        gate_weight (torch.Tensor): ``(n_experts, dim)`` router weight
            (``nn.Linear`` layout), same dtype as ``x``.
        score_func (str): ``"softmax"`` or ``"sigmoid"``. Defaults to ``"softmax"``.

    Returns:
        torch.Tensor: ``(..., n_experts)`` scores in float32 (float64 for float64 inputs).

    Example:
        >>> x = torch.tensor([[1.0, 0.0]])
        >>> w = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-2.0, 0.0]])
        >>> router_scores(x, w, "softmax")
        tensor([[0.8668, 0.1173, 0.0159]])
        >>> router_scores(x, w, "sigmoid")
        tensor([[0.8808, 0.5000, 0.1192]])
    """
    raise NotImplementedError("ep18.router_scores")


def top_k_routing(scores: torch.Tensor, k: int, normalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Keeps the ``k`` best-scoring experts of every token.

    The weights are the kept scores themselves; with ``normalize`` they are
    divided by their sum, so each token's ``k`` weights sum to 1.

    Args:
        scores (torch.Tensor): ``(..., n_experts)`` router scores, float.
        k (int): Experts kept per token, ``1 <= k <= n_experts``.
        normalize (bool): Rescale the kept weights to sum to 1. Defaults to False.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: ``weights`` ``(..., k)`` in the dtype of
        ``scores`` and ``indices`` ``(..., k)`` int64 expert ids, pair ``j`` of
        each token being expert ``indices[..., j]`` with weight ``weights[..., j]``.
        The reference returns them in descending order of score (as
        ``torch.topk``); the grader accepts the ``k`` pairs in any order.

    Example:
        >>> w, i = top_k_routing(torch.tensor([[0.1, 0.6, 0.3]]), k=2, normalize=True)
        >>> w, i
        (tensor([[0.6667, 0.3333]]), tensor([[1, 2]]))
    """
    raise NotImplementedError("ep18.top_k_routing")


class DenseMoE(nn.Module):
    """A soft (dense) mixture of experts: every expert runs on every token.

    ``y = Σ_e p_e(x) · expert_e(x)`` with ``p(x) = softmax(x gateᵀ)`` over the
    experts — the intuition behind MoE before any sparsity. Its cost grows with
    the number of experts, which is why real MoE layers keep only the top-k.

    Args:
        dim (int): Input and output width.
        inter_dim (int): Hidden width of each expert.
        n_experts (int): Number of experts.

    Attributes:
        gate (nn.Linear): Router ``dim → n_experts``, no bias (``gate.weight`` is
            ``(n_experts, dim)``, as in DeepSeek's ``Gate``).
        experts (nn.ModuleList): ``n_experts`` :class:`Expert` of width ``inter_dim``.
    """

    def __init__(self, dim: int, inter_dim: int, n_experts: int):
        super().__init__()
        self.dim = dim
        self.n_experts = n_experts
        self.gate = nn.Linear(dim, n_experts, bias=False)
        self.experts = nn.ModuleList([Expert(dim, inter_dim) for _ in range(n_experts)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mixes the outputs of all experts with the softmax router scores of each token.

        Args:
            x (torch.Tensor): ``(..., dim)`` float.

        Returns:
            torch.Tensor: ``(..., dim)``, dtype of ``x``.

        Example:
            >>> DenseMoE(dim=6, inter_dim=4, n_experts=3)(torch.randn(2, 5, 6)).shape
            torch.Size([2, 5, 6])
        """
        raise NotImplementedError("ep18.DenseMoE")
