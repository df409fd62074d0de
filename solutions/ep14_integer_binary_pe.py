"""Episode 14 — Integer and Binary Positional Encodings.

Attention by itself is blind to order: permuting the tokens permutes the
outputs the same way. A positional encoding is a ``(seq_len, d_model)`` table
whose row ``p`` is added to the embedding of the token at position ``p``.

Two first attempts, and why they fall short:

* **integer** — fill row ``p`` with the number ``p``. The values grow without
  bound and soon drown the embeddings (which are of order 1).
* **binary** — write ``p`` in binary, one bit per column, least significant
  bit first: column 0 flips every position, column 1 every two, column ``i``
  every ``2^i``. The values stay in ``{0, 1}``, but they jump discretely;
  episode 15's sinusoids are the smooth version of the same idea.

Shapes: ``t`` = ``seq_len`` positions, ``d_model`` width, ``b`` batch.
"""

import torch


def integer_positional_encoding(seq_len: int, d_model: int) -> torch.Tensor:
    """The table whose row ``p`` is the number ``p`` in every column.

    Args:
        seq_len (int): Number of positions (rows), starting at position 0.
        d_model (int): Width (columns).

    Returns:
        torch.Tensor: ``(seq_len, d_model)`` float32, ``PE[p, j] = p``.

    Example:
        >>> integer_positional_encoding(3, 2)
        tensor([[0., 0.],
                [1., 1.],
                [2., 2.]])
    """
    ### BEGIN SOLUTION
    positions = torch.arange(seq_len, dtype=torch.float32)
    return positions.unsqueeze(1).repeat(1, d_model)
    ### END SOLUTION


def binary_positional_encoding(seq_len: int, n_bits: int) -> torch.Tensor:
    """Positions written in binary, least significant bit first.

    ``PE[p, i]`` is bit ``i`` of ``p``: ``(p >> i) & 1``. Only the ``n_bits``
    lowest bits are kept, so positions from ``2^n_bits`` on repeat earlier rows.

    Args:
        seq_len (int): Number of positions (rows), starting at position 0.
        n_bits (int): Number of bits (columns).

    Returns:
        torch.Tensor: ``(seq_len, n_bits)`` float32 of zeros and ones.

    Example:
        >>> binary_positional_encoding(4, 3)        # 0, 1, 2, 3: column 0 is the lowest bit
        tensor([[0., 0., 0.],
                [1., 0., 0.],
                [0., 1., 0.],
                [1., 1., 0.]])
    """
    ### BEGIN SOLUTION
    positions = torch.arange(seq_len).unsqueeze(1)  # (t, 1)
    bits = torch.arange(n_bits)  # (n_bits,)
    return ((positions >> bits) & 1).to(torch.float32)
    ### END SOLUTION


def add_positional_encoding(x: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
    """Adds row ``p`` of a positional-encoding table to the token at position ``p``.

    The table may be longer than the sequence (precomputed for the longest
    one); its first ``t`` rows are used, the same for every batch row.

    Args:
        x (torch.Tensor): Embeddings ``(b, t, d_model)`` (or ``(t, d_model)``), float.
        pe (torch.Tensor): Table ``(max_len, d_model)`` with ``max_len >= t``, any float dtype.

    Returns:
        torch.Tensor: ``x + pe[:t]``, same shape and dtype as ``x``.

    Example:
        >>> add_positional_encoding(torch.zeros(2, 2, 3), integer_positional_encoding(4, 3))[1]
        tensor([[0., 0., 0.],
                [1., 1., 1.]])
    """
    ### BEGIN SOLUTION
    t = x.shape[-2]
    return x + pe[:t].to(x.dtype)
    ### END SOLUTION
