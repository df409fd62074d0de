"""Episode 17 — How DeepSeek Implemented Latent Attention: MLA with decoupled RoPE.

DeepSeek-V3's attention layer, name for name. Keys and values are compressed
into one latent vector per token; only that latent (normalised) and one small
rotary key ``k_pe`` per token are cached. RoPE cannot be applied to keys that
are re-expanded from the latent (the rotation would sit between the two matrices
that the absorbed path multiplies together), so position lives in separate,
*decoupled* dimensions:

* query head ``j`` is ``[q_nope | q_pe]``; the last ``qk_rope_head_dim`` dims are rotated;
* ``wkv_a(x) = [latent | k_pe]``; ``k_pe`` is rotated, *not* normalised, and is
  one head shared by all query heads; ``kv_norm`` normalises the latent only;
* ``wkv_b(latent)`` gives per head ``[k_nope | v]``;
* ``score = (q_nope·k_nope + q_pe·k_pe) · (d_nope + d_rope)^(-1/2)`` (times
  ``yarn_mscale²`` when YaRN is on), causal, softmax in float32.

Two ways to compute the same attention, chosen by ``MLA(cfg, absorb=...)``:
**naive** expands every cached latent into per-head keys and values;
**absorbed** (DeepSeek's inference default) folds ``wkv_b`` into the query and
the output, attending over the latent directly. Both read the same cache.

Shapes: ``b`` batch, ``t`` new tokens, ``s = start_pos + t`` cached tokens,
``h`` heads, ``c`` = ``kv_lora_rank``, ``r`` = ``qk_rope_head_dim``.
Tensors are ``(b, t, dim)`` at the boundary and ``(b, t, h, ·)`` inside.
"""

import torch
from torch import nn

from .config import DeepSeekConfig
from .ep02_building_blocks import RMSNorm
from .ep16_rope import apply_rope, yarn_mscale


def mla_softmax_scale(cfg: DeepSeekConfig) -> float:
    """The factor the attention scores are multiplied by, as DeepSeek-V3 sets it.

    ``(qk_nope_head_dim + qk_rope_head_dim) ** -0.5`` — the full query/key
    width, rope dims included — times ``yarn_mscale(rope_factor, mscale) ** 2``
    when YaRN is on (``cfg.yarn_enabled``).

    Args:
        cfg (DeepSeekConfig): Uses the head dims and the YaRN fields.

    Returns:
        float: The softmax scale.

    Example:
        >>> round(mla_softmax_scale(DeepSeekConfig(qk_nope_head_dim=8, qk_rope_head_dim=4)), 4)
        0.2887
    """
    raise NotImplementedError("ep17.mla_softmax_scale")


class MLA(nn.Module):
    """Multi-head latent attention with decoupled RoPE (DeepSeek-V3's ``MLA``).

    Args:
        cfg (DeepSeekConfig): Widths, head dims, ranks, cache sizes and YaRN fields.
        absorb (bool): Compute attention over the latent with ``wkv_b`` absorbed
            (True, DeepSeek's inference default) or by expanding per-head keys
            and values (False). Both give the same output and use the same cache.
            Defaults to False.

    Attributes:
        wq (nn.Linear): ``dim → h·(d_nope + r)``, only when ``q_lora_rank == 0``.
        wq_a (nn.Linear): ``dim → q_lora_rank`` query compression (when ``q_lora_rank > 0``).
        q_norm (RMSNorm): On the compressed query.
        wq_b (nn.Linear): ``q_lora_rank → h·(d_nope + r)``.
        wkv_a (nn.Linear): ``dim → c + r``: the latent, then the shared rotary key.
        kv_norm (RMSNorm): ``(c,)``, on the latent only.
        wkv_b (nn.Linear): ``c → h·(d_nope + d_v)``: per head ``[k_nope | v]``.
        wo (nn.Linear): ``h·d_v → dim``.
        softmax_scale (float): :func:`mla_softmax_scale` of ``cfg``.
        kv_cache (torch.Tensor): ``(max_batch_size, max_seq_len, c)`` normalised latents.
        pe_cache (torch.Tensor): ``(max_batch_size, max_seq_len, r)`` rotated ``k_pe``.
    """

    def __init__(self, cfg: DeepSeekConfig, absorb: bool = False):
        super().__init__()
        self.dim = cfg.dim
        self.n_heads = cfg.n_heads
        self.q_lora_rank = cfg.q_lora_rank
        self.kv_lora_rank = cfg.kv_lora_rank
        self.qk_nope_head_dim = cfg.qk_nope_head_dim
        self.qk_rope_head_dim = cfg.qk_rope_head_dim
        self.qk_head_dim = cfg.qk_head_dim
        self.v_head_dim = cfg.v_head_dim
        self.absorb = absorb
        if self.q_lora_rank == 0:
            self.wq = nn.Linear(self.dim, self.n_heads * self.qk_head_dim, bias=False)
        else:
            self.wq_a = nn.Linear(self.dim, self.q_lora_rank, bias=False)
            self.q_norm = RMSNorm(self.q_lora_rank)
            self.wq_b = nn.Linear(self.q_lora_rank, self.n_heads * self.qk_head_dim, bias=False)
        self.wkv_a = nn.Linear(self.dim, self.kv_lora_rank + self.qk_rope_head_dim, bias=False)
        self.kv_norm = RMSNorm(self.kv_lora_rank)
        self.wkv_b = nn.Linear(self.kv_lora_rank, self.n_heads * (self.qk_nope_head_dim + self.v_head_dim), bias=False)
        self.wo = nn.Linear(self.n_heads * self.v_head_dim, self.dim, bias=False)
        self.softmax_scale = mla_softmax_scale(cfg)
        # The only per-token state: the normalised latent and the rotated shared key.
        self.register_buffer("kv_cache", torch.zeros(cfg.max_batch_size, cfg.max_seq_len, self.kv_lora_rank),
                             persistent=False)
        self.register_buffer("pe_cache", torch.zeros(cfg.max_batch_size, cfg.max_seq_len, self.qk_rope_head_dim),
                             persistent=False)

    def forward(self, x: torch.Tensor, start_pos: int, freqs_cis: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        """Attends ``t`` new tokens at positions ``start_pos …`` to every cached token, and caches them.

        Writes the new tokens' latents and rotary keys into ``kv_cache`` and
        ``pe_cache`` at ``[:b, start_pos:start_pos + t]``, then attends over
        rows ``[:b, :start_pos + t]`` of both caches with :meth:`attend_naive`
        or :meth:`attend_absorbed` (``self.absorb``), and projects with ``wo``.

        Args:
            x (torch.Tensor): ``(b, t, dim)`` float, ``b <= max_batch_size``.
            start_pos (int): Position of ``x``'s first token (number of tokens already cached).
            freqs_cis (torch.Tensor): ``(t, r // 2)`` complex, the RoPE rows of
                positions ``start_pos … start_pos + t - 1``.
            mask (torch.Tensor, optional): Additive float mask broadcastable to
                ``(t, start_pos + t)`` (0 = allowed, -inf = blocked), e.g.
                ``torch.full((t, t), float("-inf")).triu(1)`` for a prompt at
                ``start_pos = 0``; None when ``t == 1`` (a new token sees everything cached).

        Returns:
            torch.Tensor: ``(b, t, dim)``, dtype of ``x``
            (float64 inputs give a float64 result; the softmax may be computed in float32).

        Example:
            >>> cfg = DeepSeekConfig()                      # dim 32, rope dims 4
            >>> freqs_cis = torch.polar(torch.ones(5, 2), torch.rand(5, 2))  # ep16: freqs_cis_from_config(cfg)[:5]
            >>> mask = torch.full((5, 5), float("-inf")).triu(1)
            >>> MLA(cfg)(torch.randn(2, 5, cfg.dim), 0, freqs_cis, mask).shape
            torch.Size([2, 5, 32])
        """
        raise NotImplementedError("ep17.MLA")

    def project_queries(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The queries of each head, split into the position-free part and the rotated part.

        ``q = wq(x)`` or ``wq_b(q_norm(wq_a(x)))``, viewed as ``(b, t, h, d_nope + r)``;
        the *last* ``r`` dims of each head are rotated with :func:`apply_rope`.

        Args:
            x (torch.Tensor): ``(b, t, dim)``.
            freqs_cis (torch.Tensor): ``(t, r // 2)`` complex.

        Returns:
            tuple[torch.Tensor, torch.Tensor]: ``q_nope`` ``(b, t, h, d_nope)`` and
            rotated ``q_pe`` ``(b, t, h, r)``, dtype of ``x``.
        """
        raise NotImplementedError("ep17.MLA")

    def compress_kv(self, x: torch.Tensor, freqs_cis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What each new token contributes to the cache: its normalised latent and its rotated shared key.

        ``wkv_a(x) = [latent | k_pe]``; the latent goes through ``kv_norm``;
        ``k_pe`` (one head for all heads, never normalised) is rotated.

        Args:
            x (torch.Tensor): ``(b, t, dim)``.
            freqs_cis (torch.Tensor): ``(t, r // 2)`` complex.

        Returns:
            tuple[torch.Tensor, torch.Tensor]: ``latent`` ``(b, t, c)`` and
            ``k_pe`` ``(b, t, r)``, dtype of ``x``.
        """
        raise NotImplementedError("ep17.MLA")

    def attention_weights(self, scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Adds the mask and takes the softmax over the keys; the softmax runs in float32, as in DeepSeek.

        Args:
            scores (torch.Tensor): ``(b, t, h, s)`` scaled scores.
            mask (torch.Tensor, optional): Additive, broadcastable to ``(t, s)``.

        Returns:
            torch.Tensor: ``(b, t, h, s)`` weights in the dtype of ``scores``, rows summing to 1.
            bfloat16 scores are normalised in float32 and rounded to bfloat16 once;
            float64 inputs give a float64 result; the softmax may be computed in float32.
        """
        raise NotImplementedError("ep17.MLA")

    def attend_naive(self, q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, k_pe: torch.Tensor,
                     mask: torch.Tensor | None) -> torch.Tensor:
        """Attention with per-head keys and values expanded from the cached latents.

        ``[k_nope | v] = wkv_b(latent)`` per head; the key of head ``j`` is
        ``[k_nope_j | k_pe]`` (the same ``k_pe`` for every head).

        Args:
            q_nope (torch.Tensor): ``(b, t, h, d_nope)``.
            q_pe (torch.Tensor): ``(b, t, h, r)``, rotated.
            latent (torch.Tensor): ``(b, s, c)`` normalised latents of all cached tokens.
            k_pe (torch.Tensor): ``(b, s, r)`` rotated shared keys of all cached tokens.
            mask (torch.Tensor, optional): Additive, broadcastable to ``(t, s)``.

        Returns:
            torch.Tensor: ``(b, t, h, d_v)`` per-head outputs.
        """
        raise NotImplementedError("ep17.MLA")

    def attend_absorbed(self, q_nope: torch.Tensor, q_pe: torch.Tensor, latent: torch.Tensor, k_pe: torch.Tensor,
                        mask: torch.Tensor | None) -> torch.Tensor:
        """The same attention computed on the latents, with ``wkv_b`` absorbed (no per-head keys or values).

        With ``wkv_b.weight`` viewed as ``(h, d_nope + d_v, c)`` = per head
        ``[W_uk; W_uv]``: ``q_nope·k_nope = (q_nope W_uk)·latent``, and the
        output is ``(weights · latent) W_uvᵀ``.

        Args:
            q_nope (torch.Tensor): ``(b, t, h, d_nope)``.
            q_pe (torch.Tensor): ``(b, t, h, r)``, rotated.
            latent (torch.Tensor): ``(b, s, c)``.
            k_pe (torch.Tensor): ``(b, s, r)``.
            mask (torch.Tensor, optional): Additive, broadcastable to ``(t, s)``.

        Returns:
            torch.Tensor: ``(b, t, h, d_v)`` per-head outputs.
        """
        raise NotImplementedError("ep17.MLA")


def mla_cache_bytes_per_token(cfg: DeepSeekConfig, bytes_per_element: int = 2) -> int:
    """Bytes MLA caches per token for the whole model: ``(kv_lora_rank + qk_rope_head_dim)·n_layers``
    elements, independent of the number of heads.

    Args:
        cfg (DeepSeekConfig): Uses ``kv_lora_rank``, ``qk_rope_head_dim``, ``n_layers``.
        bytes_per_element (int): 2 for bfloat16, 1 for fp8, 4 for float32. Defaults to 2.

    Returns:
        int: Bytes per token of one sequence.

    Example:
        >>> mla_cache_bytes_per_token(DeepSeekConfig(kv_lora_rank=512, qk_rope_head_dim=64, n_layers=61))  # V3
        70272
    """
    raise NotImplementedError("ep17.mla_cache_bytes_per_token")
