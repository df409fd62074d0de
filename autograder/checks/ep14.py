"""Checks for episode 14: integer and binary positional encodings, and adding an encoding to embeddings."""

import torch

from ..probing import dtype_of, noncontiguous, randn
from ..registry import Episode, case

EPISODE = Episode("ep14", "Integer and Binary Positional Encodings", video="https://youtu.be/rP0CoTxe5gU",
                  module="ep14_integer_binary_pe")

# --- integer_positional_encoding -------------------------------------------------------------------

integer = EPISODE.exercise("integer_positional_encoding")


@integer.check(case(seq_len=5, d_model=3), case(seq_len=1, d_model=4), case(seq_len=2, d_model=7))
def integer_table(impl, c, gen):
    """row p filled with p, float32"""
    return impl.integer_positional_encoding(c.seq_len, c.d_model)


@integer.check(case(seq_len=12, d_model=6), case(seq_len=3, d_model=1), hidden=True)
def hidden_integer_table(impl, c, gen):
    """other sizes"""
    return impl.integer_positional_encoding(c.seq_len, c.d_model)


@integer.misconception("positions_from_1", "Positions start at 0: the first token's row is all zeros "
                       "(torch.arange(seq_len)).")
def _(seq_len, d_model):
    return torch.arange(1, seq_len + 1, dtype=torch.float32).unsqueeze(1).repeat(1, d_model)


@integer.misconception("transposed", "The table has one row per position: shape (seq_len, d_model).")
def _(seq_len, d_model):
    return torch.arange(seq_len, dtype=torch.float32).repeat(d_model, 1)


@integer.misconception("integer_dtype", "Return a float32 table (it is added to float embeddings): "
                       "torch.arange(seq_len, dtype=torch.float32).")
def _(seq_len, d_model):
    return torch.arange(seq_len).unsqueeze(1).repeat(1, d_model)


# --- binary_positional_encoding --------------------------------------------------------------------

binary = EPISODE.exercise("binary_positional_encoding")


@binary.check(case(seq_len=8, n_bits=3), case(seq_len=1, n_bits=4), case(seq_len=6, n_bits=5))
def binary_table(impl, c, gen):
    """bit i of position p at column i, least significant bit first, float32"""
    return impl.binary_positional_encoding(c.seq_len, c.n_bits)


@binary.check(case(seq_len=20, n_bits=4), case(seq_len=33, n_bits=7), hidden=True)
def hidden_binary_table(impl, c, gen):
    """more positions than the bits can count (rows repeat); more bits"""
    return impl.binary_positional_encoding(c.seq_len, c.n_bits)


def _bits(positions, n_bits):
    return ((positions.unsqueeze(1) >> torch.arange(n_bits)) & 1).to(torch.float32)


@binary.misconception("most_significant_first", "Column i holds bit i, the least significant bit first: column 0 "
                      "flips at every position, (p >> i) & 1. Yours writes the number as we read it, most "
                      "significant bit first.")
def _(seq_len, n_bits):
    return _bits(torch.arange(seq_len), n_bits).flip(-1)


@binary.misconception("positions_from_1", "Positions start at 0: row 0 is all zeros, row 1 is [1, 0, 0, …].")
def _(seq_len, n_bits):
    return _bits(torch.arange(1, seq_len + 1), n_bits)


@binary.misconception("integer_dtype", "Return the bits as a float32 table (0.0 and 1.0), ready to add to "
                      "embeddings: .to(torch.float32).")
def _(seq_len, n_bits):
    return (torch.arange(seq_len).unsqueeze(1) >> torch.arange(n_bits)) & 1


# --- add_positional_encoding -----------------------------------------------------------------------

add = EPISODE.exercise("add_positional_encoding")


def embeddings_and_table(gen, c):
    """Embeddings ``(*lead, t, d)`` of the case's dtype and a table ``(max_len, d)`` of dtype ``pe_dtype``."""
    x = randn(gen, *c.lead, c.t, c.d, dtype=dtype_of(c))
    pe = randn(gen, c.max_len, c.d, dtype=getattr(torch, c.params.get("pe_dtype", "float32")))
    return noncontiguous(x) if c.params.get("noncontiguous") else x, pe


@add.check(case(lead=[2], t=5, d=3, max_len=8), case(lead=[1], t=1, d=4, max_len=1),
           case(lead=[3], t=4, d=6, max_len=4, dtype="float64", pe_dtype="float64"),
           case(lead=[], t=3, d=5, max_len=6))
def add_first_rows(impl, c, gen):
    """x + the table's first t rows, for every batch row (and for unbatched (t, d) input)"""
    return impl.add_positional_encoding(*embeddings_and_table(gen, c))


@add.check(case(lead=[2], t=3, d=4, max_len=5, pe_dtype="float64"))
def keeps_the_embeddings_dtype(impl, c, gen):
    """a float64 table added to float32 embeddings gives float32"""
    return impl.add_positional_encoding(*embeddings_and_table(gen, c))


@add.check(case(lead=[3], t=6, d=2, max_len=10, noncontiguous=True),
           case(lead=[2], t=2, d=5, max_len=9, dtype="float64", pe_dtype="float32"), hidden=True)
def hidden_add(impl, c, gen):
    """non-contiguous embeddings; a float32 table with float64 embeddings"""
    return impl.add_positional_encoding(*embeddings_and_table(gen, c))


@add.misconception("last_rows", "Position p gets row p of the table: use its first t rows, pe[:t], not the last.")
def _(x, pe):
    return x + pe[pe.shape[0] - x.shape[-2]:].to(x.dtype)


@add.misconception("concatenated", "The encoding is *added* to the embeddings (same width d_model), not "
                   "concatenated next to them.")
def _(x, pe):
    table = pe[:x.shape[-2]].to(x.dtype).expand(*x.shape[:-1], -1)
    return torch.cat([x, table], dim=-1)


@add.misconception("dtype_of_the_table", "The result must keep the embeddings' dtype: cast the table, "
                   "pe[:t].to(x.dtype), before adding (float32 + float64 would give float64).")
def _(x, pe):
    return x + pe[:x.shape[-2]]
