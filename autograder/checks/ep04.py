"""Checks for episode 4: attention scores, weights and context vectors without trainable weights."""

import math

import torch

from ..compare import Tolerance
from ..probing import dtype_of, noncontiguous, randn
from ..registry import Episode, case

EPISODE = Episode("ep04", "Attention Mechanism Explained in 1 Hour", video="https://youtu.be/K45ze9Yd5UE",
                  module="ep04_attention_basics")

# The attention exercises (episodes 4-11, 13, 17) may compute their softmax in float32 and cast back, as
# DeepSeek-V3's MLA and transformers do (softmax(dim=-1, dtype=torch.float32).type_as(x)); their docstrings say
# so. Their float64 cases then agree with the reference to float32 precision only: such correct code is off by
# at most ~2e-7 on values of order 1 (tests/test_alternatives.py). Every float64 case of an attention exercise
# uses this tolerance; the float32 cases keep the default one.
SOFTMAX_IN_FLOAT32 = {"float64": Tolerance(1e-6, 1e-5)}


def embeddings(gen, c):
    """``(b, t, d)`` inputs for case ``c`` (scaled by ``c.scale``, non-contiguous if asked)."""
    x = randn(gen, c.b, c.t, c.d, dtype=dtype_of(c), scale=c.params.get("scale", 1.0))
    return noncontiguous(x) if c.params.get("noncontiguous") else x


# --- attention_scores ------------------------------------------------------------------------

scores = EPISODE.exercise("attention_scores")


@scores.check(case(b=2, t=5, d=3), case(b=1, t=1, d=4), case(b=3, t=4, d=6, dtype="float64"))
def random_embeddings(impl, c, gen):
    """scores of random embeddings: every pair of tokens"""
    return impl.attention_scores(embeddings(gen, c))


@scores.check(case(b=3, t=6, d=2, noncontiguous=True), case(b=2, t=3, d=7, scale=30.0), hidden=True)
def hidden_embeddings(impl, c, gen):
    """scores of non-contiguous and large embeddings"""
    return impl.attention_scores(embeddings(gen, c))


@scores.misconception("x_transpose_x", "You computed xᵀx — similarities between embedding dimensions, (b, d, d) — "
                      "instead of x xᵀ, similarities between tokens, (b, t, t). Transpose the second factor: "
                      "x @ x.transpose(-2, -1).")
def _(x):
    return x.transpose(-2, -1) @ x


@scores.misconception("scaled", "Your scores are divided by √d. That scale belongs to episode 5's scaled "
                      "dot-product attention; here the scores are the plain dot products x xᵀ.")
def _(x):
    return x @ x.transpose(-2, -1) / math.sqrt(x.shape[-1])


@scores.misconception("self_only", "(x * x).sum(-1) is each token's score with itself only; attention needs "
                      "every pair (i, j): x @ x.transpose(-2, -1), shape (b, t, t).")
def _(x):
    return (x * x).sum(-1)


# --- attention_weights ------------------------------------------------------------------------

weights = EPISODE.exercise("attention_weights")


@weights.check(case(b=2, t=4, s=6), case(b=1, t=1, s=1), case(b=3, t=5, s=2, dtype="float64"),
               tolerances=SOFTMAX_IN_FLOAT32)
def random_scores(impl, c, gen):
    """softmax of random scores (t ≠ s, so each row is a query)"""
    return impl.attention_weights(randn(gen, c.b, c.t, c.s, dtype=dtype_of(c), scale=2.0))


@weights.check(case(b=2, t=3, s=5))
def large_scores(impl, c, gen):
    """softmax of scores around 1000 (must not overflow)"""
    return impl.attention_weights(randn(gen, c.b, c.t, c.s, scale=50.0) + 1000.0)


@weights.check(case(b=2, t=6, s=4, noncontiguous=True), case(b=1, t=2, s=9, large=True), hidden=True)
def hidden_scores(impl, c, gen):
    """softmax of non-contiguous and very large scores"""
    s = randn(gen, c.b, c.t, c.s, scale=80.0 if c.params.get("large") else 1.0)
    return impl.attention_weights(noncontiguous(s) if c.params.get("noncontiguous") else s)


@weights.misconception("wrong_axis", "Each row — one query's weights over all keys — must sum to 1: take the "
                       "softmax over the last axis (dim=-1). Yours normalises the columns.")
def _(s):
    return torch.softmax(s, dim=-2)


@weights.misconception("sum_normalised", "Dividing the scores by their row sum is not a softmax (it breaks with "
                       "negative scores). Exponentiate first: torch.softmax(scores, dim=-1).")
def _(s):
    return s / s.sum(dim=-1, keepdim=True)


@weights.misconception("naive_exp", "exp() overflowed to inf for large scores, and inf/inf is NaN. Subtract each "
                       "row's maximum before exponentiating (the softmax does not change), or use torch.softmax.")
def _(s):
    e = torch.exp(s)
    return e / e.sum(dim=-1, keepdim=True)


@weights.misconception("whole_matrix", "You normalised the whole (t, s) matrix at once; each query row must sum "
                       "to 1 on its own: softmax over dim=-1 only.")
def _(s):
    return torch.softmax(s.flatten(-2), dim=-1).view_as(s)


# --- context_vectors ------------------------------------------------------------------------

context = EPISODE.exercise("context_vectors")


@context.check(case(b=2, t=5, d=3), case(b=1, t=1, d=4), case(b=3, t=4, d=6, dtype="float64"),
               tolerances=SOFTMAX_IN_FLOAT32)
def random_embeddings_context(impl, c, gen):
    """context vectors of random embeddings"""
    return impl.context_vectors(embeddings(gen, c))


@context.check(case(b=2, t=7, d=5, noncontiguous=True), case(b=2, t=4, d=3, scale=10.0), hidden=True)
def hidden_context(impl, c, gen):
    """context vectors of non-contiguous and large embeddings"""
    return impl.context_vectors(embeddings(gen, c))


@context.misconception("no_softmax", "You multiplied the raw scores by x. Normalise the scores into weights "
                       "first (softmax over each row), then take the weighted sum: softmax(x xᵀ) x.")
def _(x):
    return (x @ x.transpose(-2, -1)) @ x


@context.misconception("weights_transposed", "Row i of the weights belongs to query i, so the context of token i "
                       "is weights[i] @ x. Multiplying by the transposed weights mixes with column sums instead.")
def _(x):
    w = torch.softmax(x @ x.transpose(-2, -1), dim=-1)
    return w.transpose(-2, -1) @ x


@context.misconception("wrong_axis", "The softmax was taken over the wrong axis: normalise each query row "
                       "(dim=-1), so each context vector is a weighted average of the embeddings.")
def _(x):
    return torch.softmax(x @ x.transpose(-2, -1), dim=-2) @ x


@context.misconception("scaled", "This episode's simplified attention has no scale: the weights are "
                       "softmax(x xᵀ). Dividing by √d comes with the trainable projections of episode 5.")
def _(x):
    return torch.softmax(x @ x.transpose(-2, -1) / math.sqrt(x.shape[-1]), dim=-1) @ x


@context.misconception("naive_exp", "exp() overflowed for large scores (inf/inf = NaN): use a stable softmax "
                       "(subtract the row max first, or torch.softmax).")
def _(x):
    e = torch.exp(x @ x.transpose(-2, -1))
    return (e / e.sum(dim=-1, keepdim=True)) @ x
