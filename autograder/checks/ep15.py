"""Checks for episode 15: the sinusoidal encoding and the matrix that shifts it by k positions."""

import torch

from ..registry import Episode, case

EPISODE = Episode("ep15", "All About Sinusoidal Positional Encodings", video="https://youtu.be/bQCQ7VO-TWU",
                  module="ep15_sinusoidal_pe")


def dtype_arg(c) -> torch.dtype:
    """The dtype a case asks the function to return (``case.dtype``, default float32)."""
    return getattr(torch, c.params.get("dtype", "float32"))


def _frequencies(d_model, base, exponent_scale=2):
    """ω_i = base^(-exponent_scale·i/d) (``exponent_scale=1`` is the off-by-2 bug), float64."""
    return base ** (-exponent_scale * torch.arange(d_model // 2, dtype=torch.float64) / d_model)


# --- sinusoidal_positional_encoding ----------------------------------------------------------------

sinusoidal = EPISODE.exercise("sinusoidal_positional_encoding")


@sinusoidal.check(case(seq_len=6, d_model=8), case(seq_len=1, d_model=4), case(seq_len=50, d_model=16),
                  case(seq_len=9, d_model=6, base=100.0), case(seq_len=7, d_model=10, dtype="float64"))
def sinusoidal_table(impl, c, gen):
    """sin(p·ω_i) at column 2i, cos(p·ω_i) at column 2i+1, ω_i = base^(-2i/d)"""
    return impl.sinusoidal_positional_encoding(c.seq_len, c.d_model, c.params.get("base", 10000.0),
                                               dtype=dtype_arg(c))


@sinusoidal.check(case(seq_len=128, d_model=32), case(seq_len=12, d_model=2, base=500.0),
                  case(seq_len=40, d_model=12, base=50.0, dtype="float64"), hidden=True)
def hidden_sinusoidal_table(impl, c, gen):
    """long sequences, a single pair, other bases"""
    return sinusoidal_table(impl, c, gen)


def _table(seq_len, d_model, base, dtype, first_position=0, exponent_scale=2, layout="interleaved"):
    angles = torch.outer(torch.arange(first_position, first_position + seq_len, dtype=torch.float64),
                         _frequencies(d_model, base, exponent_scale))
    if layout == "half_split":
        return torch.cat([angles.sin(), angles.cos()], dim=-1).to(dtype)
    first, second = (angles.cos(), angles.sin()) if layout == "cos_first" else (angles.sin(), angles.cos())
    return torch.stack([first, second], dim=-1).flatten(-2).to(dtype)


@sinusoidal.misconception("cos_at_even_columns", "sin goes to the even columns and cos to the odd ones: "
                          "PE[p, 2i] = sin(p·ω_i), PE[p, 2i+1] = cos(p·ω_i).")
def _(seq_len, d_model, base=10000.0, dtype=torch.float32):
    return _table(seq_len, d_model, base, dtype, layout="cos_first")


@sinusoidal.misconception("half_split", "The sines and cosines are interleaved — column 2i is sin, column 2i+1 "
                          "cos of the same frequency — not all sines in the first half and cosines in the second.")
def _(seq_len, d_model, base=10000.0, dtype=torch.float32):
    return _table(seq_len, d_model, base, dtype, layout="half_split")


@sinusoidal.misconception("exponent_missing_2", "The exponent is off by a factor 2: ω_i = base^(-2i/d). Use "
                          "torch.arange(0, d, 2) / d (the even column indices over d), not arange(d // 2) / d.")
def _(seq_len, d_model, base=10000.0, dtype=torch.float32):
    return _table(seq_len, d_model, base, dtype, exponent_scale=1)


@sinusoidal.misconception("positions_from_1", "Positions start at 0: row 0 is [0, 1, 0, 1, …] (sin 0, cos 0).")
def _(seq_len, d_model, base=10000.0, dtype=torch.float32):
    return _table(seq_len, d_model, base, dtype, first_position=1)


# --- relative_position_matrix ----------------------------------------------------------------------

relative = EPISODE.exercise("relative_position_matrix")


@relative.check(case(k=1, d_model=8), case(k=0, d_model=4), case(k=5, d_model=6, base=100.0),
                case(k=3, d_model=10, dtype="float64"))
def matrix(impl, c, gen):
    """block i is [[cos kω_i, sin kω_i], [-sin kω_i, cos kω_i]] at rows and columns 2i, 2i+1"""
    return impl.relative_position_matrix(c.k, c.d_model, c.params.get("base", 10000.0), dtype=dtype_arg(c))


def reference_table(reference, c, gen):
    """The reference's float64 sinusoidal table (``setup``: the property is tested on your matrix alone)."""
    return reference.sinusoidal_positional_encoding(c.positions + abs(c.k), c.d_model,
                                                    c.params.get("base", 10000.0), dtype=torch.float64)


@relative.check(case(k=1, d_model=8, positions=12), case(k=7, d_model=6, positions=20),
                case(k=-3, d_model=10, positions=9, base=100.0), setup=reference_table)
def shifts_every_position(impl, c, gen, pe):
    """float64: PE[p + k] − M·PE[p] is 0 for every position p (k < 0 shifts back)"""
    m = impl.relative_position_matrix(c.k, c.d_model, c.params.get("base", 10000.0), dtype=torch.float64)
    p = torch.arange(c.positions) + max(-c.k, 0)  # positions with p + k inside the table
    return pe[p + c.k] - pe[p] @ m.T


@relative.check(case(k=-4, d_model=8), case(k=50, d_model=16), case(k=2, d_model=2, base=500.0, dtype="float64"),
                hidden=True)
def hidden_matrix(impl, c, gen):
    """a negative shift, a long shift, a single pair"""
    return matrix(impl, c, gen)


@relative.check(case(k=30, d_model=12, positions=40), case(k=-11, d_model=4, positions=15, base=50.0),
                setup=reference_table, hidden=True)
def hidden_shifts_every_position(impl, c, gen, pe):
    """float64: the shift property for other sizes"""
    return shifts_every_position(impl, c, gen, pe)


def _matrix(k, d_model, base, dtype, exponent_scale=2, transposed=False, layout="interleaved"):
    angles = k * _frequencies(d_model, base, exponent_scale)
    cos, sin = angles.cos(), angles.sin()
    block = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # (d/2, 2, 2)
    if transposed:
        block = block.transpose(-2, -1)
    m = torch.block_diag(*block)
    if layout == "half_split":  # pairs (i, i + d/2) instead of (2i, 2i+1)
        order = torch.arange(d_model).view(2, -1).T.flatten()  # interleaved position of each half-split dim
        m = torch.empty_like(m).index_put_(torch.meshgrid(order, order, indexing="ij"), m)
    return m.to(dtype)


@relative.misconception("rotation_transposed", "With each pair ordered (sin, cos), moving forward is "
                        "[[cos kω, sin kω], [-sin kω, cos kω]] (from sin(a+b) = sin a cos b + cos a sin b). "
                        "Yours is the transpose, which moves k positions back.")
def _(k, d_model, base=10000.0, dtype=torch.float32):
    return _matrix(k, d_model, base, dtype, transposed=True)


@relative.misconception("exponent_missing_2", "The exponent is off by a factor 2: ω_i = base^(-2i/d), the same "
                        "frequencies as the encoding.")
def _(k, d_model, base=10000.0, dtype=torch.float32):
    return _matrix(k, d_model, base, dtype, exponent_scale=1)


@relative.misconception("half_split_pairs", "Each 2×2 block acts on the interleaved pair of columns (2i, 2i+1), "
                        "where PE keeps sin and cos of one frequency — not on columns (i, i + d/2).")
def _(k, d_model, base=10000.0, dtype=torch.float32):
    return _matrix(k, d_model, base, dtype, layout="half_split")
