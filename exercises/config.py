"""Course-wide model configuration, modelled on DeepSeek-V3's ``ModelArgs``.

One dataclass describes every model the course builds, from the tiny one the
tests use to the published DeepSeek-V2 and DeepSeek-V3. The field names are
DeepSeek-V3's own (``inference/model.py``), so a real checkpoint's config maps
one to one. The only addition is ``gate_bias``: DeepSeek-V3 switches the
router's selection bias on by looking at the model width; here it is an
explicit flag.

Example:
    >>> cfg = deepseek_v3()
    >>> cfg.n_routed_experts, cfg.n_activated_experts, cfg.score_func
    (256, 8, 'sigmoid')
    >>> cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
    192
"""

from dataclasses import dataclass, replace
from typing import Literal


@dataclass
class DeepSeekConfig:
    """Hyperparameters of a DeepSeek-style model (MLA attention, DeepSeekMoE FFN).

    Attributes:
        max_batch_size (int): Largest batch the attention caches are sized for.
        max_seq_len (int): Longest sequence (prompt + generated) the model handles;
            also the length of the precomputed RoPE table. YaRN is on when this
            exceeds ``original_seq_len``.
        vocab_size (int): Number of token ids (rows of the embedding, columns of the head).
        dim (int): Model width ``d_model``; tensors are ``(b, t, dim)`` between blocks.
        inter_dim (int): Hidden width of the dense SwiGLU MLP in the first
            ``n_dense_layers`` blocks.
        moe_inter_dim (int): Hidden width of one routed expert (and, times
            ``n_shared_experts``, of the shared expert MLP).
        n_layers (int): Number of transformer blocks.
        n_dense_layers (int): The first this many blocks use a dense MLP instead of MoE.
        n_heads (int): Number of attention heads.
        n_routed_experts (int): Routed experts per MoE layer.
        n_shared_experts (int): Shared experts per MoE layer, fused into one MLP of width
            ``n_shared_experts * moe_inter_dim`` that every token goes through.
        n_activated_experts (int): Routed experts each token is sent to (top-k).
        n_expert_groups (int): Groups the routed experts are split into for
            group-limited routing (1 = no grouping).
        n_limited_groups (int): Groups a token may route to (top groups kept).
        score_func (str): Router scoring, ``"softmax"`` (DeepSeek-V2) or ``"sigmoid"`` (DeepSeek-V3).
        route_scale (float): Factor applied to the routing weights of the selected experts.
        gate_bias (bool): Whether the router has a selection-only bias per expert
            (DeepSeek-V3's auxiliary-loss-free balancing). With it, group scores are
            the sum of each group's top-2 biased scores instead of the max.
        q_lora_rank (int): Rank of the query compression ``wq_a``; 0 means a single
            full-rank query projection ``wq``.
        kv_lora_rank (int): Width ``d_c`` of the compressed key-value latent (the only
            per-head-free part MLA caches besides ``k_pe``).
        qk_nope_head_dim (int): Per-head query/key dims that carry no position.
        qk_rope_head_dim (int): Per-head query dims (and the one shared key head's dims)
            rotated by RoPE; they are the *last* dims of each query head.
        v_head_dim (int): Per-head value dims.
        rope_theta (float): RoPE base ``theta``.
        original_seq_len (int): Context length the model was pre-trained with (YaRN's reference length).
        rope_factor (float): YaRN context-extension factor ``s``.
        beta_fast (int): YaRN: rotations above which frequencies are kept (high-frequency end of the ramp).
        beta_slow (int): YaRN: rotations below which frequencies are fully interpolated.
        mscale (float): YaRN attention-temperature coefficient; the softmax scale is
            multiplied by ``(0.1 * mscale * ln(rope_factor) + 1) ** 2`` when YaRN is on.
    """

    max_batch_size: int = 8
    max_seq_len: int = 64
    vocab_size: int = 97
    dim: int = 32
    inter_dim: int = 64
    moe_inter_dim: int = 16
    n_layers: int = 2
    n_dense_layers: int = 1
    n_heads: int = 4
    # MoE
    n_routed_experts: int = 8
    n_shared_experts: int = 1
    n_activated_experts: int = 2
    n_expert_groups: int = 4
    n_limited_groups: int = 2
    score_func: Literal["softmax", "sigmoid"] = "sigmoid"
    route_scale: float = 2.5
    gate_bias: bool = True
    # MLA
    q_lora_rank: int = 24
    kv_lora_rank: int = 16
    qk_nope_head_dim: int = 8
    qk_rope_head_dim: int = 4
    v_head_dim: int = 6
    # RoPE and YaRN
    rope_theta: float = 10000.0
    original_seq_len: int = 128
    rope_factor: float = 40.0
    beta_fast: int = 32
    beta_slow: int = 1
    mscale: float = 1.0

    @property
    def qk_head_dim(self) -> int:
        """Per-head query/key width: ``qk_nope_head_dim + qk_rope_head_dim``."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def yarn_enabled(self) -> bool:
        """True when the context is extended beyond the pre-training length."""
        return self.max_seq_len > self.original_seq_len


def tiny(**overrides) -> DeepSeekConfig:
    """A model small enough for tests: every width distinct, so axis mix-ups show.

    Args:
        **overrides: Fields to change, e.g. ``tiny(q_lora_rank=0)``.

    Returns:
        DeepSeekConfig: ``dim=32``, 4 heads, nope/rope/value head dims 8/4/6,
        8 routed experts in 4 groups, sigmoid gate with bias, YaRN off.

    Example:
        >>> tiny(q_lora_rank=0).q_lora_rank
        0
    """
    return replace(DeepSeekConfig(), **overrides)


def deepseek_v2(**overrides) -> DeepSeekConfig:
    """DeepSeek-V2 (236B total, 21B activated), as published.

    Numbers from DeepSeek-V2's ``config.json`` and the DeepSeek-V3 repository's
    ``config_236B.json``: softmax gate without bias, 160 routed experts in 8
    groups (3 kept), 6 activated, 2 shared, ``route_scale`` 16, YaRN x40 from
    4K with ``mscale`` 0.707.

    Args:
        **overrides: Fields to change.

    Returns:
        DeepSeekConfig: The DeepSeek-V2 hyperparameters.

    Example:
        >>> deepseek_v2().n_routed_experts
        160
    """
    cfg = DeepSeekConfig(
        max_batch_size=1, max_seq_len=163840, vocab_size=102400, dim=5120,
        inter_dim=12288, moe_inter_dim=1536, n_layers=60, n_dense_layers=1, n_heads=128,
        n_routed_experts=160, n_shared_experts=2, n_activated_experts=6,
        n_expert_groups=8, n_limited_groups=3, score_func="softmax", route_scale=16.0,
        gate_bias=False, q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128,
        qk_rope_head_dim=64, v_head_dim=128, rope_theta=10000.0, original_seq_len=4096,
        rope_factor=40.0, beta_fast=32, beta_slow=1, mscale=0.707,
    )
    return replace(cfg, **overrides)


def deepseek_v3(**overrides) -> DeepSeekConfig:
    """DeepSeek-V3 (671B total, 37B activated), as published.

    Numbers from the DeepSeek-V3 repository's ``config_671B.json`` and its
    ``ModelArgs`` defaults: sigmoid gate with selection bias, 256 routed
    experts in 8 groups (4 kept), 8 activated, 1 shared, ``route_scale`` 2.5,
    YaRN x40 from 4K (128K context).

    Args:
        **overrides: Fields to change.

    Returns:
        DeepSeekConfig: The DeepSeek-V3 hyperparameters.

    Example:
        >>> deepseek_v3().dim
        7168
    """
    cfg = DeepSeekConfig(
        max_batch_size=1, max_seq_len=163840, vocab_size=129280, dim=7168,
        inter_dim=18432, moe_inter_dim=2048, n_layers=61, n_dense_layers=3, n_heads=128,
        n_routed_experts=256, n_shared_experts=1, n_activated_experts=8,
        n_expert_groups=8, n_limited_groups=4, score_func="sigmoid", route_scale=2.5,
        gate_bias=True, q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128,
        qk_rope_head_dim=64, v_head_dim=128, rope_theta=10000.0, original_seq_len=4096,
        rope_factor=40.0, beta_fast=32, beta_slow=1, mscale=1.0,
    )
    return replace(cfg, **overrides)
