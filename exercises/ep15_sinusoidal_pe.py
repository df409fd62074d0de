"""Episode 15 — All About Sinusoidal Positional Encodings.

The encoding of "Attention is all you need": each pair of columns ``(2i, 2i+1)``
holds ``sin`` and ``cos`` of the position times a frequency
``ω_i = base^(-2i/d_model)``. The first pair turns once every ``2π`` positions,
the last one ``base`` times more slowly: the smooth analogue of episode 14's
binary digits, bounded in ``[-1, 1]``.

Its key property: moving ``k`` positions is a fixed linear map. By the angle
addition formulas, each pair ``(sin pω, cos pω)`` becomes
``(sin (p+k)ω, cos (p+k)ω)`` under the 2×2 matrix
``[[cos kω, sin kω], [-sin kω, cos kω]]``, which depends on ``k`` but not on
``p``. Stacking one such block per pair gives a block-diagonal ``M`` with
``PE[p + k] = M · PE[p]`` for every position ``p`` — a rotation, and the seed of
RoPE (episode 16), which applies such rotations to queries and keys.

Shapes: ``t`` = ``seq_len`` positions, ``d`` = ``d_model`` (even).
"""

import torch


def sinusoidal_positional_encoding(seq_len: int, d_model: int, base: float = 10000.0,
                                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The sinusoidal table: sin at even columns, cos at odd columns.

    ``PE[p, 2i] = sin(p · ω_i)`` and ``PE[p, 2i+1] = cos(p · ω_i)`` with
    ``ω_i = base^(-2i/d_model)``, for positions ``p = 0 … seq_len - 1``.
    Computed in float64 and rounded once to ``dtype``.

    Args:
        seq_len (int): Number of positions (rows).
        d_model (int): Width (columns), even.
        base (float): Sets the slowest frequency. Defaults to 10000.0.
        dtype (torch.dtype): Dtype of the result. Defaults to torch.float32.

    Returns:
        torch.Tensor: ``(seq_len, d_model)`` of ``dtype``, values in ``[-1, 1]``.

    Example:
        >>> sinusoidal_positional_encoding(3, 4, base=100.0)   # ω = 1, 0.1
        tensor([[ 0.0000,  1.0000,  0.0000,  1.0000],
                [ 0.8415,  0.5403,  0.0998,  0.9950],
                [ 0.9093, -0.4161,  0.1987,  0.9801]])
    """
    raise NotImplementedError("ep15.sinusoidal_positional_encoding")


def relative_position_matrix(k: int, d_model: int, base: float = 10000.0,
                             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The block-diagonal ``M`` that moves every sinusoidal row ``k`` positions on: ``PE[p + k] = M · PE[p]``.

    Block ``i`` (rows and columns ``2i, 2i+1``) is
    ``[[cos kω_i, sin kω_i], [-sin kω_i, cos kω_i]]``; all other entries are 0.
    ``M`` is orthogonal, ``M(k)ᵀ = M(-k)``, and ``M(j) M(k) = M(j + k)``.
    Computed in float64 and rounded once to ``dtype``.

    Args:
        k (int): The shift, any integer (negative moves back).
        d_model (int): Width, even.
        base (float): As in :func:`sinusoidal_positional_encoding`. Defaults to 10000.0.
        dtype (torch.dtype): Dtype of the result. Defaults to torch.float32.

    Returns:
        torch.Tensor: ``(d_model, d_model)`` of ``dtype``. With ``PE`` as rows,
        ``PE[p + k] == PE[p] @ M.T``.

    Example:
        >>> pe = sinusoidal_positional_encoding(10, 6, dtype=torch.float64)
        >>> M = relative_position_matrix(3, 6, dtype=torch.float64)
        >>> torch.allclose(pe[:7] @ M.T, pe[3:])
        True
    """
    raise NotImplementedError("ep15.relative_position_matrix")
