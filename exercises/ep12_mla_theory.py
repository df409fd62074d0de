"""Episode 12 — Multi-Head Latent Attention from Scratch: the idea, in equations.

Decoding reads the whole KV cache for every new token, so its size per token
decides how long a context and how large a batch fit in memory. Multi-query
and grouped-query attention shrink it by sharing key/value heads, at a cost in
quality. Multi-head latent attention (MLA, DeepSeek-V2) instead caches one
small *latent* vector per token and layer, ``c = W^DKV h`` of width ``d_c``,
and recovers every head's key and value from it with two up-projections,
``k = W^UK c`` and ``v = W^UV c``.

The up-projections never need to run for cached tokens: ``q · k = q · (W^UK c)
= (W^UKᵀ q) · c``, so ``W^UK`` is *absorbed* into the query, and likewise
``W^UV`` into the output (``Σ_s w_s W^UV c_s = W^UV Σ_s w_s c_s``). Attention
then runs directly on the cached latents.

Weight layouts follow ``nn.Linear``: a weight is ``(out_features, in_features)``
and ``y = x @ W.T``. The rows of an up-projection are grouped by head: rows
``j·d_h … (j+1)·d_h - 1`` produce head ``j``. (DeepSeek's code stacks ``W^UK``
and ``W^UV`` into one ``wkv_b`` matrix, head by head: episode 13.)

Shapes: ``b`` batch, ``t`` query tokens, ``s`` cached (key) tokens, ``h`` heads
``n_h``, ``d`` head width ``d_h``, ``d_c`` latent width (``kv_lora_rank``).
Per-head tensors use DeepSeek's layout ``(b, t, h, d)``.
"""

import torch

from .config import deepseek_v2  # noqa: F401  (used by the docstring example)


def kv_cache_elements_per_token(mechanism: str, n_layers: int, n_heads: int, head_dim: int,
                                n_groups: float | None = None, kv_lora_rank: int | None = None,
                                rope_head_dim: int | None = None) -> float:
    """Cached elements per token over all layers: DeepSeek-V2's Table 1.

    ============  ============================  ==============================
    mechanism     cached per token and layer    total (``l`` layers)
    ============  ============================  ==============================
    ``"mha"``     a key and a value per head    ``2 · n_h · d_h · l``
    ``"gqa"``     a key and a value per group   ``2 · n_g · d_h · l``
    ``"mqa"``     one shared key and value      ``2 · d_h · l``
    ``"mla"``     the latent and the RoPE key   ``(d_c + d_h^R) · l``
    ============  ============================  ==============================

    MLA's cache does not depend on the number of heads. With DeepSeek-V2's
    choice ``d_c = 4 d_h`` and ``d_h^R = d_h / 2`` it equals GQA with
    ``n_g = 2.25`` groups (``n_groups`` may be fractional for such comparisons).

    Args:
        mechanism (str): ``"mha"``, ``"gqa"``, ``"mqa"`` or ``"mla"``.
        n_layers (int): Layers ``l``.
        n_heads (int): Attention (query) heads ``n_h``.
        head_dim (int): Per-head width ``d_h``.
        n_groups (float, optional): Key/value groups ``n_g``; required for ``"gqa"``.
        kv_lora_rank (int, optional): Latent width ``d_c``; required for ``"mla"``.
        rope_head_dim (int, optional): Width ``d_h^R`` of MLA's decoupled RoPE key,
            shared by all heads (0 for MLA without RoPE); required for ``"mla"``.

    Returns:
        float: Elements per token (an ``int`` for integer arguments); multiply by
        bytes per element and tokens for the cache size.

    Raises:
        ValueError: For an unknown ``mechanism``, or when the argument the
            mechanism needs (``n_groups``, ``kv_lora_rank``, ``rope_head_dim``) is None.

    Example:
        >>> cfg = deepseek_v2()                 # 60 layers, 128 heads, d_h 128, d_c 512, d_h^R 64
        >>> mha = kv_cache_elements_per_token("mha", cfg.n_layers, cfg.n_heads, cfg.qk_nope_head_dim)
        >>> mla = kv_cache_elements_per_token("mla", cfg.n_layers, cfg.n_heads, cfg.qk_nope_head_dim,
        ...                                   kv_lora_rank=cfg.kv_lora_rank, rope_head_dim=cfg.qk_rope_head_dim)
        >>> mha, mla
        (1966080, 34560)
        >>> print(f"MLA caches {mla / mha:.2%} of what MHA caches ({mha / mla:.1f}x less)")
        MLA caches 1.76% of what MHA caches (56.9x less)
        >>> kv_cache_elements_per_token("gqa", 60, 128, 128, n_groups=2.25) == mla
        True
    """
    raise NotImplementedError("ep12.kv_cache_elements_per_token")


def compress_kv(h: torch.Tensor, w_dkv: torch.Tensor) -> torch.Tensor:
    """The latent ``c = W^DKV h`` of each token: all MLA caches (DeepSeek-V2, eq. 9).

    This is the plain down-projection of the paper; DeepSeek's code also
    normalises the latent (``kv_norm``, episode 13).

    Args:
        h (torch.Tensor): Hidden states ``(..., t, d_model)``, float.
        w_dkv (torch.Tensor): Down-projection ``(d_c, d_model)`` (``nn.Linear`` layout).

    Returns:
        torch.Tensor: Latents ``(..., t, d_c)``, dtype of ``h``.

    Example:
        >>> compress_kv(torch.ones(1, 2, 3), torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
        tensor([[[1., 3.],
                 [1., 3.]]])
    """
    raise NotImplementedError("ep12.compress_kv")


def expand_kv(c: torch.Tensor, w_uk: torch.Tensor, w_uv: torch.Tensor,
              n_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every head's key and value, recovered from the latents (DeepSeek-V2, eqs. 10–11).

    ``k = W^UK c`` and ``v = W^UV c``, then split into heads: features
    ``j·d … (j+1)·d - 1`` are head ``j``.

    Args:
        c (torch.Tensor): Latents ``(b, s, d_c)``, float.
        w_uk (torch.Tensor): Key up-projection ``(n_heads · d, d_c)``.
        w_uv (torch.Tensor): Value up-projection ``(n_heads · d_v, d_c)``.
        n_heads (int): Number of heads ``h``.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: keys ``(b, s, h, d)`` and values
        ``(b, s, h, d_v)``, dtype of ``c``.

    Example:
        >>> k, v = expand_kv(torch.randn(2, 5, 3), torch.randn(8, 3), torch.randn(6, 3), n_heads=2)
        >>> k.shape, v.shape
        (torch.Size([2, 5, 2, 4]), torch.Size([2, 5, 2, 3]))
    """
    raise NotImplementedError("ep12.expand_kv")


def absorbed_scores(q: torch.Tensor, c: torch.Tensor, w_uk: torch.Tensor) -> torch.Tensor:
    """The attention scores ``q · k`` computed on the latents, without forming any key.

    For head ``j``, with ``W_j`` the ``(d, d_c)`` rows of ``w_uk`` that belong to
    it, ``k_s = W_j c_s`` and so ``q · k_s = (W_jᵀ q) · c_s``: project each query
    head into the latent space once, then take dot products with the cached
    latents. The result equals ``einsum("bthd,bshd->bths", q, k)`` with ``k``
    from :func:`expand_kv` (unscaled), but the ``(b, s, h, d)`` keys never exist.

    Args:
        q (torch.Tensor): Queries ``(b, t, h, d)``, float, any strides.
        c (torch.Tensor): Latents ``(b, s, d_c)``, same dtype.
        w_uk (torch.Tensor): Key up-projection ``(h · d, d_c)`` (``nn.Linear`` layout).

    Returns:
        torch.Tensor: Scores ``(b, t, h, s)``: ``[b, i, j, m]`` is query ``i`` of
        head ``j`` against key ``m``; dtype of ``q``.

    Example:
        >>> q, c, w_uk = torch.randn(2, 3, 4, 5), torch.randn(2, 7, 6), torch.randn(4 * 5, 6)
        >>> k, _ = expand_kv(c, w_uk, w_uk, n_heads=4)
        >>> torch.allclose(absorbed_scores(q, c, w_uk), torch.einsum("bthd,bshd->bths", q, k), atol=1e-5)
        True
    """
    raise NotImplementedError("ep12.absorbed_scores")


def absorbed_context(weights: torch.Tensor, c: torch.Tensor, w_uv: torch.Tensor) -> torch.Tensor:
    """The attention output ``Σ_s w_s v_s`` computed on the latents, without forming any value.

    For head ``j``, ``Σ_s w_s (W_j c_s) = W_j (Σ_s w_s c_s)``: average the
    latents with each head's weights, then up-project the ``t`` averages instead
    of the ``s`` cached latents. Equals ``einsum("bths,bshd->bthd", weights, v)``
    with ``v`` from :func:`expand_kv`.

    Args:
        weights (torch.Tensor): Attention weights ``(b, t, h, s)``, float.
        c (torch.Tensor): Latents ``(b, s, d_c)``, same dtype.
        w_uv (torch.Tensor): Value up-projection ``(h · d_v, d_c)`` (``nn.Linear`` layout).

    Returns:
        torch.Tensor: Per-head outputs ``(b, t, h, d_v)``, dtype of ``weights``.

    Example:
        >>> w, c, w_uv = torch.rand(2, 3, 4, 7), torch.randn(2, 7, 6), torch.randn(4 * 5, 6)
        >>> _, v = expand_kv(c, w_uv, w_uv, n_heads=4)
        >>> torch.allclose(absorbed_context(w, c, w_uv), torch.einsum("bths,bshd->bthd", w, v), atol=1e-5)
        True
    """
    raise NotImplementedError("ep12.absorbed_context")
