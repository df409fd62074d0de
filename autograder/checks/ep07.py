"""Checks for episode 7: splitting and merging heads, and the multi-head wrapper."""

import torch

from ..probing import build, dtype_of, future_change, noncontiguous, randn
from ..registry import Episode, case
from .ep04 import SOFTMAX_IN_FLOAT32

EPISODE = Episode("ep07", "Multi-Head Attention Visually Explained", video="https://youtu.be/qbN4ulK-bZA",
                  module="ep07_multihead_visual")


def inputs(gen, c, *shape):
    """Random inputs of ``shape`` in the case's dtype, non-contiguous if the case asks."""
    x = randn(gen, *shape, dtype=dtype_of(c))
    return noncontiguous(x) if c.params.get("noncontiguous") else x


# --- split_heads ----------------------------------------------------------------------------

split = EPISODE.exercise("split_heads")


@split.check(case(b=2, t=5, h=3, d=4), case(b=1, t=1, h=2, d=3), case(b=3, t=4, h=6, d=1),
             case(b=2, t=3, h=4, d=5, dtype="float64"))
def random_inputs(impl, c, gen):
    """(b, t, h·d) features cut into h heads of d, heads before tokens"""
    return impl.split_heads(inputs(gen, c, c.b, c.t, c.h * c.d), c.h)


@split.check(case(b=3, t=6, h=2, d=5, noncontiguous=True), case(b=2, t=7, h=1, d=6), case(b=4, t=2, h=5, d=3),
             hidden=True)
def hidden_inputs(impl, c, gen):
    """a non-contiguous input, one head, more heads than tokens"""
    return impl.split_heads(inputs(gen, c, c.b, c.t, c.h * c.d), c.h)


@split.misconception("reshape_without_transpose", "x.view(b, h, t, d) reinterprets the memory instead of moving "
                     "the axes: it mixes tokens into heads. Split the features first, x.view(b, t, h, d), then "
                     "swap the token and head axes with .transpose(1, 2).")
def split_without_transpose(x, n_heads):
    """``(b, t, h·d)`` viewed straight as ``(b, h, t, d)`` (also used by later episodes' variants)."""
    b, t, d_model = x.shape
    return x.reshape(b, n_heads, t, d_model // n_heads)


@split.misconception("no_transpose", "The heads must come before the tokens, (b, h, t, d): after "
                     "view(b, t, h, d), add .transpose(1, 2).")
def _(x, n_heads):
    return x.unflatten(-1, (n_heads, -1))


@split.misconception("strided_heads", "Head i owns the contiguous features i·d … (i+1)·d − 1, not every h-th "
                     "feature: split the last axis as (h, d), not (d, h).")
def _(x, n_heads):
    return x.unflatten(-1, (-1, n_heads)).permute(0, 3, 1, 2)


# --- merge_heads ----------------------------------------------------------------------------

merge = EPISODE.exercise("merge_heads")


@merge.check(case(b=2, h=3, t=5, d=4), case(b=1, h=2, t=1, d=3), case(b=3, h=1, t=4, d=6),
             case(b=2, h=4, t=3, d=5, dtype="float64"))
def random_inputs(impl, c, gen):
    """(b, h, t, d) heads put back side by side, (b, t, h·d)"""
    return impl.merge_heads(inputs(gen, c, c.b, c.h, c.t, c.d))


@merge.check(case(b=3, h=2, t=6, d=5, noncontiguous=True), case(b=2, h=5, t=3, d=2, transposed=True),
             hidden=True)
def hidden_inputs(impl, c, gen):
    """non-contiguous inputs (as attention produces them after a transpose)"""
    if c.params.get("transposed"):
        return impl.merge_heads(randn(gen, c.b, c.t, c.h, c.d).transpose(1, 2))
    return impl.merge_heads(inputs(gen, c, c.b, c.h, c.t, c.d))


@merge.misconception("reshape_without_transpose", "x.reshape(b, t, h·d) straight from (b, h, t, d) merges the "
                     "heads in the wrong order (it mixes tokens across heads). Move the tokens back in front "
                     "first: x.transpose(1, 2).reshape(b, t, h·d).")
def merge_without_transpose(x):
    """``(b, h, t, d)`` reshaped straight to ``(b, t, h·d)`` (also used by later episodes' variants)."""
    b, h, t, d = x.shape
    return x.reshape(b, t, h * d)


@merge.misconception("interleaved_heads", "The merged features must be head 0's d features, then head 1's, … "
                     "(index i·d + j). Yours interleave the heads (index j·h + i): transpose tokens and heads "
                     "only, x.transpose(1, 2), then flatten the last two axes.")
def _(x):
    return x.permute(0, 2, 3, 1).flatten(2)


# --- MultiHeadAttentionWrapper ------------------------------------------------------------------

wrapper = EPISODE.exercise("MultiHeadAttentionWrapper", method="forward")


def make_wrapper(impl, c, gen):
    return build(impl.MultiHeadAttentionWrapper, c.d_in, c.d_out, c.ctx, 0.2, c.h,
                 qkv_bias=c.params.get("qkv_bias", False), gen=gen).to(dtype_of(c))


@wrapper.check(case(b=2, t=5, d_in=3, d_out=4, h=3, ctx=8), case(b=1, t=1, d_in=4, d_out=2, h=2, ctx=4),
               case(b=3, t=6, d_in=5, d_out=3, h=2, ctx=6, qkv_bias=True),
               case(b=2, t=4, d_in=6, d_out=5, h=3, ctx=7, dtype="float64"), tolerances=SOFTMAX_IN_FLOAT32)
def forward_eval(impl, c, gen):
    """forward in eval mode: every head's output, concatenated"""
    return make_wrapper(impl, c, gen)(inputs(gen, c, c.b, c.t, c.d_in))


@wrapper.check(case(b=2, t=6, d_in=4, d_out=3, h=2, ctx=8, i=2))
def no_peeking(impl, c, gen):
    """changing tokens after position i leaves the outputs up to i unchanged"""
    return future_change(make_wrapper(impl, c, gen), [randn(gen, c.b, c.t, c.d_in)], c.i, gen)


@wrapper.check(case(b=3, t=7, d_in=6, d_out=5, h=4, ctx=7, noncontiguous=True),
               case(b=2, t=3, d_in=8, d_out=2, h=5, ctx=9), hidden=True)
def forward_hidden(impl, c, gen):
    """non-contiguous inputs; more heads"""
    return make_wrapper(impl, c, gen)(inputs(gen, c, c.b, c.t, c.d_in))


@wrapper.misconception("concatenated_over_tokens", "torch.cat(..., dim=1) stacks the heads' outputs along the "
                       "tokens. Each token keeps its position and gets all heads' features: concatenate on the "
                       "last axis, dim=-1.")
def _(self, x):
    return torch.cat([head(x) for head in self.heads], dim=1)


@wrapper.misconception("stacked_heads", "torch.stack adds a head axis, (b, h, t, d_out). The wrapper concatenates "
                       "the heads' features: torch.cat([...], dim=-1), shape (b, t, h·d_out).")
def _(self, x):
    return torch.stack([head(x) for head in self.heads], dim=1)


@wrapper.misconception("summed_heads", "Summing the heads mixes their features into one d_out vector. Keep them "
                       "side by side: torch.cat([head(x) for head in self.heads], dim=-1).")
def _(self, x):
    return sum(head(x) for head in self.heads)
