"""Episode 19 — Mixture of Experts, Hands-On: DeepSeekMoE as DeepSeek-V3 implements it.

DeepSeek's MoE layer (``MoE``) sends every token through

* one **shared** SwiGLU MLP of width ``n_shared_experts · moe_inter_dim`` (the
  shared experts, fused into one network that every token uses), and
* ``n_activated_experts`` of ``n_routed_experts`` small **routed** experts
  chosen by the :class:`Gate`,

and returns ``shared(x) + Σ_selected weight_e · expert_e(x)``.

The gate (router), step by step, for each token:

1. ``scores = softmax(x Wᵀ)`` (DeepSeek-V2) or ``sigmoid(x Wᵀ)`` (DeepSeek-V3),
   computed in float32;
2. with ``gate_bias`` (DeepSeek-V3's auxiliary-loss-free balancing) a per-expert
   bias is added — to the scores used for *choosing* only;
3. group-limited routing (``n_expert_groups > 1``): the experts are split into
   equal groups of consecutive ids, each group is scored (its max score, or the
   sum of its two best scores when the bias is on), and only the
   ``n_limited_groups`` best groups stay eligible (the others get ``-inf``);
4. the top ``n_activated_experts`` eligible experts are chosen;
5. their weights are the *unbiased* scores of step 1, renormalised to sum to 1
   for sigmoid (not for softmax, whose scores are already a distribution over
   all experts), times ``route_scale``.

Shapes: ``b`` batch, ``t`` sequence, ``n`` tokens (``b·t`` flattened), ``E``
routed experts, ``k`` activated experts per token.
"""

import torch
from torch import nn

from .config import DeepSeekConfig
from .ep02_building_blocks import MLP
from .ep18_moe_intro import Expert, router_scores


class Gate(nn.Module):
    """DeepSeek-V3's router: scores, optional selection bias, group-limited top-k.

    Args:
        cfg (DeepSeekConfig): Uses ``dim``, ``n_routed_experts``,
            ``n_activated_experts``, ``n_expert_groups``, ``n_limited_groups``,
            ``score_func``, ``route_scale``, ``gate_bias``.

    Attributes:
        weight (nn.Parameter): ``(n_routed_experts, dim)`` router weight (initialised ``randn / √dim``).
        bias (nn.Parameter or None): ``(n_routed_experts,)`` selection-only bias,
            kept in float32 whatever the model's dtype, as DeepSeek-V3 keeps it
            (its commit "fp32 gate bias"): it is added to float32 scores and moved
            by small steps (``gamma = 0.001``, episode 20) that bfloat16 would
            round away; None without ``cfg.gate_bias``.
        topk (int): Experts per token (``n_activated_experts``).
        n_groups (int): Expert groups (``n_expert_groups``); each holds
            ``n_routed_experts // n_groups`` consecutive experts (at least 2 when
            the bias is on).
        topk_groups (int): Groups kept per token (``n_limited_groups``).
    """

    def __init__(self, cfg: DeepSeekConfig):
        super().__init__()
        self.dim = cfg.dim
        self.topk = cfg.n_activated_experts
        self.n_groups = cfg.n_expert_groups
        self.topk_groups = cfg.n_limited_groups
        self.score_func = cfg.score_func
        self.route_scale = cfg.route_scale
        self.weight = nn.Parameter(torch.randn(cfg.n_routed_experts, cfg.dim) * cfg.dim ** -0.5)
        self.bias = nn.Parameter(torch.zeros(cfg.n_routed_experts, dtype=torch.float32)) if cfg.gate_bias else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Chooses ``topk`` experts per token and their weights.

        Steps 1–5 of the module docstring: scores with episode 18's
        :func:`router_scores`, the bias added for the choice only, step 3 in
        :meth:`limit_to_groups` (when ``n_groups > 1``), then the top-k.

        Args:
            x (torch.Tensor): ``(n, dim)`` tokens (flattened), float.

        Returns:
            tuple[torch.Tensor, torch.Tensor]: ``weights`` ``(n, topk)`` in the
            dtype of ``x`` — the unbiased scores of the chosen experts
            (renormalised for sigmoid) times ``route_scale`` — and ``indices``
            ``(n, topk)`` int64 expert ids. The reference returns them in
            descending order of the selection score (``torch.topk``'s order);
            the grader accepts the ``topk`` pairs in any order.

        Example:
            >>> cfg = DeepSeekConfig(dim=6, n_routed_experts=8, n_activated_experts=2,
            ...                      n_expert_groups=4, n_limited_groups=2)
            >>> weights, indices = Gate(cfg)(torch.randn(5, 6))
            >>> weights.shape, indices.shape, weights.sum(-1).allclose(torch.full((5,), 2.5))
            (torch.Size([5, 2]), torch.Size([5, 2]), True)
        """
        raise NotImplementedError("ep19.Gate")

    def limit_to_groups(self, choice: torch.Tensor) -> torch.Tensor:
        """Makes the experts outside each token's ``topk_groups`` best groups ineligible.

        Group ``g`` holds experts ``g·E/G … (g+1)·E/G - 1``. Its score is the
        largest of its experts' scores, or, when the gate has a bias, the sum
        of its two largest (biased) scores. The experts of every other group get
        ``-inf``, so no top-k can pick them, however low the kept scores are.

        Args:
            choice (torch.Tensor): ``(n, E)`` selection scores (biased if the gate has a bias).

        Returns:
            torch.Tensor: ``(n, E)``: ``choice`` in the kept groups, ``-inf`` elsewhere.
        """
        raise NotImplementedError("ep19.Gate")


def expert_token_counts(indices: torch.Tensor, n_experts: int) -> torch.Tensor:
    """How many tokens are routed to each expert (the expert *load*).

    Args:
        indices (torch.Tensor): ``(..., k)`` int64 chosen expert ids, e.g. the
            gate's ``indices`` ``(n, k)``.
        n_experts (int): Number of routed experts (experts nobody chose count 0).

    Returns:
        torch.Tensor: ``(n_experts,)`` int64; ``counts[e]`` is the number of
        (token, slot) pairs routed to expert ``e``, so the counts sum to ``indices.numel()``.

    Example:
        >>> expert_token_counts(torch.tensor([[0, 2], [2, 1], [0, 2]]), n_experts=4)
        tensor([2, 1, 3, 0])
    """
    raise NotImplementedError("ep19.expert_token_counts")


class MoE(nn.Module):
    """DeepSeekMoE: a shared MLP plus routed experts chosen by the :class:`Gate` (DeepSeek-V3's ``MoE``).

    Drop-in feed-forward layer of a DeepSeek block: ``(b, t, dim) → (b, t, dim)``.

    Args:
        cfg (DeepSeekConfig): Uses ``dim``, ``moe_inter_dim``, ``n_routed_experts``,
            ``n_shared_experts`` and the gate's fields.

    Attributes:
        gate (Gate): The router (``gate.weight``, ``gate.bias``).
        experts (nn.ModuleList): ``n_routed_experts`` :class:`Expert` of width ``moe_inter_dim``.
        shared_experts (MLP): One SwiGLU MLP of width ``n_shared_experts · moe_inter_dim``.
    """

    def __init__(self, cfg: DeepSeekConfig):
        super().__init__()
        self.dim = cfg.dim
        self.n_routed_experts = cfg.n_routed_experts
        self.n_activated_experts = cfg.n_activated_experts
        self.gate = Gate(cfg)
        self.experts = nn.ModuleList([Expert(cfg.dim, cfg.moe_inter_dim) for _ in range(cfg.n_routed_experts)])
        self.shared_experts = MLP(cfg.dim, cfg.n_shared_experts * cfg.moe_inter_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``shared_experts(x) + Σ_j weights[:, j] · experts[indices[:, j]](x)`` per token.

        Tokens are flattened to ``(n, dim)`` for the gate; each routed expert
        runs once, on exactly the tokens that chose it.

        Args:
            x (torch.Tensor): ``(b, t, dim)`` (or any ``(..., dim)``) float.

        Returns:
            torch.Tensor: Same shape and dtype as ``x``.

        Example:
            >>> MoE(DeepSeekConfig(dim=6, moe_inter_dim=4))(torch.randn(2, 3, 6)).shape
            torch.Size([2, 3, 6])
        """
        raise NotImplementedError("ep19.MoE")
