"""Episode 13 — Multi-Head Latent Attention: the code, with DeepSeek's names (without RoPE).

The layer of episode 12 as DeepSeek-V2/V3 write it, minus the rotary part
that episode 17 adds:

* queries: ``q = wq(x)``, or with a low-rank query ``q = wq_b(q_norm(wq_a(x)))``;
* the latent: ``wkv_a(x)``, normalised by ``kv_norm`` — this, and nothing
  else, is cached: ``(b, t, kv_lora_rank)`` per layer;
* keys and values: ``wkv_b`` up-projects the latent; its weight
  ``(h · 2d, kv_lora_rank)`` holds, head by head, the key rows then the value
  rows: viewed as ``(h, 2d, kv_lora_rank)``, ``[j, :d]`` is head ``j``'s
  ``W^UK`` and ``[j, d:]`` its ``W^UV``;
* causal softmax attention with scale ``head_dim ** -0.5``, computed in float32,
  then ``wo``.

Two ways to compute the same attention, chosen by ``absorb``: the **naive** path
expands every cached latent into per-head keys and values; the **absorbed**
path (DeepSeek's inference default) folds ``W^UK`` into the queries and ``W^UV``
into the output (episode 12's ``absorbed_scores`` and ``absorbed_context``) and
never forms a per-head key or value of a cached token.

The cache, as in DeepSeek-V3's ``MLA``: a buffer ``kv_cache`` of shape
``(max_batch_size, max_seq_len, kv_lora_rank)`` allocated once. A call
``forward(x, start_pos)`` with ``t`` tokens writes their normalised latents to
rows ``[:b, start_pos:start_pos + t]`` and attends over rows
``[:b, :start_pos + t]``; ``start_pos = 0`` starts a new sequence. Unlike
DeepSeek-V3's ``attn_impl="naive"`` (which caches expanded keys and values),
both paths here read the same latent cache, so they can be switched between calls.

Shapes: ``b`` batch, ``t`` new tokens, ``s = start_pos + t`` tokens attended
to, ``h`` heads, ``d`` head width, ``c`` = ``kv_lora_rank``. Tensors are
``(b, t, d_model)`` at the boundary and ``(b, t, h, ·)`` inside (DeepSeek's layout).
"""

import torch
from torch import nn

from .ep02_building_blocks import RMSNorm
from .ep06_causal_attention import causal_mask
from .ep12_mla_theory import absorbed_context, absorbed_scores, expand_kv


class MultiHeadLatentAttention(nn.Module):
    """Causal multi-head latent attention without RoPE, caching only the normalised latent.

    Args:
        d_model (int): Model width.
        n_heads (int): Heads ``h``.
        head_dim (int): Width ``d`` of each head's query, key and value.
        kv_lora_rank (int): Latent width ``c``.
        q_lora_rank (int): Rank of the query compression; 0 means one full-rank
            projection ``wq``. Defaults to 0.
        max_batch_size (int): Batch size the cache is allocated for. Defaults to 8.
        max_seq_len (int): Tokens the cache holds (prompt plus generated). Defaults to 64.
        absorb (bool): Attend over the latents with ``wkv_b`` absorbed (True) or
            expand per-head keys and values (False); an attribute that may be
            switched between calls. Defaults to False.

    Attributes:
        wq (nn.Linear): ``d_model → h·d`` (only when ``q_lora_rank == 0``).
        wq_a (nn.Linear): ``d_model → q_lora_rank`` (only when ``q_lora_rank > 0``).
        q_norm (RMSNorm): ``(q_lora_rank,)``, on the compressed query.
        wq_b (nn.Linear): ``q_lora_rank → h·d``.
        wkv_a (nn.Linear): ``d_model → c``, the down-projection ``W^DKV``.
        kv_norm (RMSNorm): ``(c,)``, on the latent before it is cached.
        wkv_b (nn.Linear): ``c → h·2d``, per head ``[W^UK; W^UV]``.
        wo (nn.Linear): ``h·d → d_model``.
        softmax_scale (float): ``head_dim ** -0.5``.
        kv_cache (torch.Tensor): ``(max_batch_size, max_seq_len, c)``, the
            normalised latents (not saved in the state dict).

    All projections are bias-free, as in DeepSeek.
    """

    def __init__(self, d_model: int, n_heads: int, head_dim: int, kv_lora_rank: int, q_lora_rank: int = 0,
                 max_batch_size: int = 8, max_seq_len: int = 64, absorb: bool = False):
        super().__init__()
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = head_dim
        self.kv_lora_rank = kv_lora_rank
        self.q_lora_rank = q_lora_rank
        self.absorb = absorb
        if q_lora_rank == 0:
            self.wq = nn.Linear(d_model, n_heads * head_dim, bias=False)
        else:
            self.wq_a = nn.Linear(d_model, q_lora_rank, bias=False)
            self.q_norm = RMSNorm(q_lora_rank)
            self.wq_b = nn.Linear(q_lora_rank, n_heads * head_dim, bias=False)
        self.wkv_a = nn.Linear(d_model, kv_lora_rank, bias=False)
        self.kv_norm = RMSNorm(kv_lora_rank)
        self.wkv_b = nn.Linear(kv_lora_rank, n_heads * 2 * head_dim, bias=False)
        self.wo = nn.Linear(n_heads * head_dim, d_model, bias=False)
        self.softmax_scale = head_dim ** -0.5
        self.register_buffer("kv_cache", torch.zeros(max_batch_size, max_seq_len, kv_lora_rank), persistent=False)

    def forward(self, x: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        """Attends ``t`` new tokens at positions ``start_pos …`` to themselves and every cached token.

        Projects the queries, caches the new tokens' normalised latents at
        ``kv_cache[:b, start_pos:start_pos + t]``, attends causally over
        ``kv_cache[:b, :start_pos + t]`` (query ``i`` sees tokens up to
        ``start_pos + i``) with :meth:`attend_absorbed` or :meth:`attend_naive`
        (``self.absorb``), merges the heads and applies ``wo``.

        Args:
            x (torch.Tensor): ``(b, t, d_model)``, float, the module's dtype,
                ``b <= max_batch_size``, ``start_pos + t <= max_seq_len``.
            start_pos (int): Position of ``x``'s first token: how many tokens of
                this sequence are already cached. Defaults to 0 (a new sequence).

        Returns:
            torch.Tensor: ``(b, t, d_model)``, dtype of ``x``
            (float64 inputs give a float64 result; the softmax may be computed in float32).
            Prefilling a prompt, then feeding tokens one at a time with increasing
            ``start_pos``, gives the outputs of one ``forward`` over the whole sequence.

        Example:
            >>> mla = MultiHeadLatentAttention(d_model=16, n_heads=4, head_dim=8, kv_lora_rank=6)
            >>> x = torch.randn(2, 5, 16)
            >>> full = mla(x)                                    # prefill all 5 tokens
            >>> steps = torch.cat([mla(x[:, :3]), mla(x[:, 3:4], 3), mla(x[:, 4:], 4)], dim=1)
            >>> torch.allclose(full, steps, atol=1e-6)
            True
            >>> mla.kv_cache[:2, :5].shape                       # all that is cached
            torch.Size([2, 5, 6])
        """
        raise NotImplementedError("ep13.MultiHeadLatentAttention")

    def split_wkv_b(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``W^UK`` and ``W^UV`` out of ``wkv_b.weight``, whose rows are, head by head, ``[key rows; value rows]``.

        Returns:
            tuple[torch.Tensor, torch.Tensor]: ``w_uk`` and ``w_uv``, each
            ``(h·d, c)`` in ``nn.Linear`` layout (rows of head ``j`` at ``j·d … (j+1)·d - 1``),
            as :func:`expand_kv` and :func:`absorbed_scores` take them.
        """
        raise NotImplementedError("ep13.MultiHeadLatentAttention")

    def attention_weights(self, scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scales, masks and normalises the scores; the softmax runs in float32, as in DeepSeek.

        Args:
            scores (torch.Tensor): ``(b, t, h, s)`` unscaled ``q · k``.
            mask (torch.Tensor): ``(t, s)`` bool, True = blocked (the same for every head).

        Returns:
            torch.Tensor: ``(b, t, h, s)`` weights in the dtype of ``scores``; each row sums to 1.
            bfloat16 scores are normalised in float32 and rounded to bfloat16 once;
            float64 inputs give a float64 result; the softmax may be computed in float32.
        """
        raise NotImplementedError("ep13.MultiHeadLatentAttention")

    def attend_naive(self, q: torch.Tensor, latent: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention with per-head keys and values expanded from the latents.

        Args:
            q (torch.Tensor): ``(b, t, h, d)`` queries.
            latent (torch.Tensor): ``(b, s, c)`` normalised latents of every token attended to.
            mask (torch.Tensor): ``(t, s)`` bool causal mask.

        Returns:
            torch.Tensor: ``(b, t, h, d)`` per-head outputs.
        """
        raise NotImplementedError("ep13.MultiHeadLatentAttention")

    def attend_absorbed(self, q: torch.Tensor, latent: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The same attention on the latents, ``W^UK`` absorbed into the queries and ``W^UV`` into the output.

        Args:
            q (torch.Tensor): ``(b, t, h, d)`` queries.
            latent (torch.Tensor): ``(b, s, c)`` normalised latents of every token attended to.
            mask (torch.Tensor): ``(t, s)`` bool causal mask.

        Returns:
            torch.Tensor: ``(b, t, h, d)`` per-head outputs; no ``(b, s, h, ·)``
            tensor is formed.
        """
        raise NotImplementedError("ep13.MultiHeadLatentAttention")
