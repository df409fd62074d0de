"""Episode 16 — Rotary Positional Encodings (RoPE), as DeepSeek-V3 uses them.

RoPE encodes position ``m`` by *rotating* each pair of query/key dimensions by
the angle ``m·θ_i``, with one frequency ``θ_i = base^(-2i/d)`` per pair. The dot
product of a query rotated to position ``m`` and a key rotated to position ``n``
then depends only on the offset ``n - m``. A rotation of a pair ``(a, b)`` is a
multiplication of the complex number ``a + ib`` by ``e^{i m θ_i}``, so the
rotations of all positions are precomputed once as a complex table ``freqs_cis``.

Two layouts pair the dimensions differently:

* **interleaved** (DeepSeek, the original RoFormer): pair ``i`` is ``(x[2i], x[2i+1])``;
* **half-split** (GPT-NeoX, Llama): pair ``i`` is ``(x[i], x[i + d/2])``.

They agree up to a fixed permutation of the dimensions. DeepSeek-V3 stretches the
frequencies for long contexts with YaRN: low frequencies are divided by the
context-extension factor, high frequencies are kept, with a linear ramp between,
and the softmax scale grows by ``yarn_mscale(factor, mscale)²`` (episode 17).

Shapes: ``b`` batch, ``t`` sequence, ``h`` heads, ``d`` = ``head_dim`` (even) the
rotated width; tensors to rotate are ``(b, t, h, d)``.
"""

import math

import torch

from .config import DeepSeekConfig


def rope_frequencies(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """The rotation frequency of each dimension pair, ``θ_i = base^(-2i/d)``.

    Args:
        head_dim (int): Rotated width ``d`` (even).
        base (float): RoPE base ``θ`` (DeepSeek's ``rope_theta``). Defaults to 10000.0.

    Returns:
        torch.Tensor: ``(head_dim // 2,)`` float32, ``θ_0 = 1`` decreasing towards ``1/base``.

    Example:
        >>> rope_frequencies(4)
        tensor([1.0000, 0.0100])
    """
    ### BEGIN SOLUTION
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim  # 2i/d
    return 1.0 / (base ** exponents)
    ### END SOLUTION


def precompute_freqs_cis(head_dim: int, seq_len: int, base: float = 10000.0,
                         freqs: torch.Tensor | None = None) -> torch.Tensor:
    """The rotation of every position as a complex number, ``e^{i·m·θ_i}``.

    Positions start at 0 (the first token is not rotated).

    Args:
        head_dim (int): Rotated width ``d`` (even).
        seq_len (int): Number of positions ``m = 0 … seq_len - 1``.
        base (float): RoPE base. Defaults to 10000.0.
        freqs (torch.Tensor, optional): ``(head_dim // 2,)`` frequencies to use
            instead of :func:`rope_frequencies` (e.g. YaRN's). Defaults to None.

    Returns:
        torch.Tensor: ``(seq_len, head_dim // 2)`` complex64 of modulus 1; entry
        ``[m, i]`` is ``cos(m θ_i) + i·sin(m θ_i)``.

    Example:
        >>> precompute_freqs_cis(4, 3)[:, 0]
        tensor([ 1.0000+0.0000j,  0.5403+0.8415j, -0.4161+0.9093j])
    """
    ### BEGIN SOLUTION
    if freqs is None:
        freqs = rope_frequencies(head_dim, base)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), freqs)  # (seq_len, d/2): m·θ_i
    return torch.polar(torch.ones_like(angles), angles)
    ### END SOLUTION


def apply_rope(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Rotates the **interleaved** pairs ``(x[2i], x[2i+1])`` by ``freqs_cis`` (DeepSeek's layout).

    Each pair is read as the complex number ``x[2i] + i·x[2i+1]`` and multiplied
    by ``freqs_cis[m, i]`` for the token at row ``m``. As in DeepSeek-V3 the
    product is computed in float32 (float64 inputs stay in float64) and cast back,
    so bfloat16 activations are rotated without bfloat16 rounding.

    Args:
        x (torch.Tensor): ``(b, t, h, d)``, any float dtype, any strides.
        freqs_cis (torch.Tensor): ``(t, d // 2)`` complex, the rows of the
            positions of ``x``'s tokens (e.g. ``table[start_pos:start_pos + t]``).

    Returns:
        torch.Tensor: ``(b, t, h, d)`` in the dtype of ``x``; the norm of every
        ``(b, t, h)`` vector is unchanged.

    Example:
        >>> x = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 1, 4)
        >>> freqs_cis = precompute_freqs_cis(4, 2)[1:]          # position 1
        >>> apply_rope(x, freqs_cis).flatten()
        tensor([0.5403, 0.8415, 0.9999, 0.0100])
    """
    ### BEGIN SOLUTION
    compute = torch.promote_types(x.dtype, torch.float32)
    pairs = x.to(compute).reshape(*x.shape[:-1], -1, 2).contiguous()  # (b, t, h, d/2, 2): (x[2i], x[2i+1])
    rotated = torch.view_as_complex(pairs) * freqs_cis.reshape(1, x.shape[1], 1, -1)
    return torch.view_as_real(rotated).flatten(-2).to(x.dtype)
    ### END SOLUTION


def apply_rope_half(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates the **half-split** pairs ``(x[i], x[i + d/2])`` (GPT-NeoX / Llama layout).

    ``out[:d/2] = x1·cos − x2·sin`` and ``out[d/2:] = x2·cos + x1·sin`` with
    ``x1 = x[:d/2]``, ``x2 = x[d/2:]``. Computed in float32 (float64 stays
    float64) and cast back, like :func:`apply_rope`.

    Args:
        x (torch.Tensor): ``(b, t, h, d)``, any float dtype.
        cos (torch.Tensor): ``(t, d // 2)`` float, ``cos(m θ_i)`` for the token at row ``m``
            (e.g. ``freqs_cis.real``).
        sin (torch.Tensor): ``(t, d // 2)`` float, ``sin(m θ_i)`` (e.g. ``freqs_cis.imag``).

    Returns:
        torch.Tensor: ``(b, t, h, d)`` in the dtype of ``x``.

    Example:
        >>> x = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 1, 4)
        >>> f = precompute_freqs_cis(4, 2)[1:]
        >>> apply_rope_half(x, f.real, f.imag).flatten()
        tensor([0.5403, 0.9999, 0.8415, 0.0100])
    """
    ### BEGIN SOLUTION
    compute = torch.promote_types(x.dtype, torch.float32)
    x1, x2 = x.to(compute).chunk(2, dim=-1)
    cos = cos.to(compute).reshape(1, x.shape[1], 1, -1)
    sin = sin.to(compute).reshape(1, x.shape[1], 1, -1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)
    ### END SOLUTION


def interleaved_to_half_permutation(head_dim: int) -> torch.Tensor:
    """The reordering of dimensions that turns the interleaved layout into the half-split one.

    With ``p = interleaved_to_half_permutation(d)``, interleaved pair ``i``
    (``x[2i], x[2i+1]``) lands at ``(i, i + d/2)``, so for every ``x``::

        apply_rope_half(x[..., p], freqs_cis.real, freqs_cis.imag) == apply_rope(x, freqs_cis)[..., p]

    Args:
        head_dim (int): Rotated width ``d`` (even).

    Returns:
        torch.Tensor: ``(head_dim,)`` int64, the even indices then the odd ones.

    Example:
        >>> interleaved_to_half_permutation(6)
        tensor([0, 2, 4, 1, 3, 5])
    """
    ### BEGIN SOLUTION
    return torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])
    ### END SOLUTION


def yarn_freqs(head_dim: int, seq_len: int, base: float, factor: float, original_seq_len: int,
               beta_fast: float, beta_slow: float) -> torch.Tensor:
    """RoPE frequencies stretched by YaRN for a context longer than the pre-training one (DeepSeek-V3).

    A pair whose frequency turns it more than ``beta_fast`` times over the
    original context is kept; one turning fewer than ``beta_slow`` times is
    interpolated (divided by ``factor``); in between, a linear ramp over the pair
    index mixes the two. The ramp runs from ``floor(dim(beta_fast))`` to
    ``ceil(dim(beta_slow))`` (clamped to ``[0, head_dim - 1]``), where
    ``dim(r) = d·ln(original_seq_len / (2π r)) / (2 ln base)`` is the pair index
    at which the frequency makes ``r`` turns. Nothing changes when
    ``seq_len <= original_seq_len``.

    Args:
        head_dim (int): Rotated width ``d`` (even).
        seq_len (int): Context length the table is built for (``max_seq_len``).
        base (float): RoPE base.
        factor (float): Context-extension factor ``s`` (DeepSeek's ``rope_factor``).
        original_seq_len (int): Pre-training context length.
        beta_fast (float): Turns above which a pair keeps its frequency.
        beta_slow (float): Turns below which a pair is fully interpolated.

    Returns:
        torch.Tensor: ``(head_dim // 2,)`` float32 frequencies.

    Example:
        >>> f = yarn_freqs(64, 163840, 10000.0, 40.0, 4096, 32, 1)   # DeepSeek-V3
        >>> bool(f[0] == rope_frequencies(64)[0]), bool(torch.isclose(f[-1], rope_frequencies(64)[-1] / 40))
        (True, True)
    """
    ### BEGIN SOLUTION
    freqs = rope_frequencies(head_dim, base)
    if seq_len <= original_seq_len:
        return freqs

    def pair_index(turns):  # where θ_i · original_seq_len = 2π · turns, on the scale of head_dim
        return head_dim * math.log(original_seq_len / (turns * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(pair_index(beta_fast)), 0)
    high = min(math.ceil(pair_index(beta_slow)), head_dim - 1)
    if low == high:
        high += 0.001  # avoid dividing by zero
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp  # 1 for fast (high-frequency) pairs, 0 for slow ones
    return freqs / factor * (1 - keep) + freqs * keep
    ### END SOLUTION


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention-temperature factor, ``0.1·mscale·ln(factor) + 1`` (1 when ``factor <= 1``).

    DeepSeek multiplies the softmax scale by its square when YaRN is on.

    Args:
        factor (float): Context-extension factor ``s``.
        mscale (float): Coefficient of the logarithm (DeepSeek's ``mscale``). Defaults to 1.0.

    Returns:
        float: The factor, ``>= 1`` for ``mscale >= 0``.

    Example:
        >>> round(yarn_mscale(40.0), 4)     # DeepSeek-V3
        1.3689
    """
    ### BEGIN SOLUTION
    if factor <= 1:
        return 1.0
    return 0.1 * mscale * math.log(factor) + 1.0
    ### END SOLUTION


def freqs_cis_from_config(cfg: DeepSeekConfig) -> torch.Tensor:
    """The model's RoPE table, as DeepSeek-V3's ``precompute_freqs_cis(args)``: YaRN when ``cfg.yarn_enabled``.

    Only the ``qk_rope_head_dim`` dims are rotated, so the table has
    ``qk_rope_head_dim // 2`` columns and one row per position up to ``max_seq_len``.

    Args:
        cfg (DeepSeekConfig): Uses ``qk_rope_head_dim``, ``max_seq_len``,
            ``rope_theta`` and the YaRN fields.

    Returns:
        torch.Tensor: ``(cfg.max_seq_len, cfg.qk_rope_head_dim // 2)`` complex64.

    Example:
        >>> freqs_cis_from_config(DeepSeekConfig(max_seq_len=64, qk_rope_head_dim=4)).shape
        torch.Size([64, 2])
    """
    ### BEGIN SOLUTION
    freqs = yarn_freqs(cfg.qk_rope_head_dim, cfg.max_seq_len, cfg.rope_theta, cfg.rope_factor,
                       cfg.original_seq_len, cfg.beta_fast, cfg.beta_slow)
    return precompute_freqs_cis(cfg.qk_rope_head_dim, cfg.max_seq_len, cfg.rope_theta, freqs=freqs)
    ### END SOLUTION
