"""Checks for episode 5: scaled dot-product attention and the SelfAttention layer."""

import math

import torch

from ..probing import build, dtype_of, named, noncontiguous, randn
from ..registry import Episode, case
from .ep04 import SOFTMAX_IN_FLOAT32

EPISODE = Episode("ep05", "Self Attention Mechanism – Handwritten from Scratch",
                  video="https://youtu.be/s8mskq-nzec", module="ep05_self_attention")


def qkv(gen, c):
    """Queries ``(lead, t, d_k)``, keys ``(lead, s, d_k)``, values ``(lead, s, d_v)`` for case ``c``."""
    lead, dtype, scale = tuple(c.lead), dtype_of(c), c.params.get("scale", 1.0)
    q = randn(gen, *lead, c.t, c.d_k, dtype=dtype, scale=scale)
    k = randn(gen, *lead, c.s, c.d_k, dtype=dtype, scale=scale)
    v = randn(gen, *lead, c.s, c.d_v, dtype=dtype)
    if c.params.get("noncontiguous"):
        q, k, v = noncontiguous(q), noncontiguous(k), noncontiguous(v)
    return q, k, v


def random_mask(gen, t, s):
    """A random boolean ``(t, s)`` mask that leaves at least one key per query unblocked."""
    mask = torch.rand(t, s, generator=gen) < 0.4
    mask[torch.arange(t), torch.randint(s, (t,), generator=gen)] = False
    return mask


# --- scaled_dot_product_attention -------------------------------------------------------------

sdpa = EPISODE.exercise("scaled_dot_product_attention")


@sdpa.check(case(lead=[2], t=5, s=7, d_k=4, d_v=3), case(lead=[1], t=1, s=1, d_k=8, d_v=2),
            case(lead=[3], t=4, s=6, d_k=6, d_v=5, dtype="float64"), tolerances=SOFTMAX_IN_FLOAT32)
def random_inputs(impl, c, gen):
    """out and weights for random q, k, v (no mask)"""
    return named(impl.scaled_dot_product_attention(*qkv(gen, c)), "out", "weights")


@sdpa.check(case(lead=[2], t=4, s=6, d_k=3, d_v=5), case(lead=[2, 3], t=5, s=5, d_k=4, d_v=2))
def with_mask(impl, c, gen):
    """a boolean mask (True = blocked) broadcast over the leading dims"""
    q, k, v = qkv(gen, c)
    return named(impl.scaled_dot_product_attention(q, k, v, random_mask(gen, c.t, c.s)), "out", "weights")


@sdpa.check(case(lead=[2, 3], t=5, s=6, d_k=4, d_v=4), case(lead=[], t=3, s=4, d_k=5, d_v=2))
def leading_dims(impl, c, gen):
    """works for (b, h, t, d) inputs and for unbatched (t, d) inputs"""
    return named(impl.scaled_dot_product_attention(*qkv(gen, c)), "out", "weights")


@sdpa.check(case(lead=[3], t=6, s=6, d_k=6, d_v=4, noncontiguous=True),
            case(lead=[2], t=3, s=8, d_k=16, d_v=3, scale=6.0),
            case(lead=[2, 2], t=4, s=9, d_k=5, d_v=7, masked=True, dtype="float64"), hidden=True,
            tolerances=SOFTMAX_IN_FLOAT32)
def hidden_inputs(impl, c, gen):
    """non-contiguous inputs, large scores, a masked float64 case"""
    q, k, v = qkv(gen, c)
    mask = random_mask(gen, c.t, c.s) if c.params.get("masked") else None
    return named(impl.scaled_dot_product_attention(q, k, v, mask), "out", "weights")


def _attend(q, k, v, mask, scale, softmax_dim=-1, fill=float("-inf"), scale_weights=False):
    """Attention with its details as switches (``scale_weights``: the scale multiplies the weights, a bug)."""
    scores = q @ k.transpose(-2, -1) * (1.0 if scale_weights else scale)
    if mask is not None:
        scores = scores.masked_fill(mask, fill)
    w = torch.softmax(scores, dim=softmax_dim) * (scale if scale_weights else 1.0)
    return w @ v, w


@sdpa.misconception("no_scale", "The scores were not scaled. Divide q kᵀ by √d_k (d_k = q.shape[-1]) before the "
                    "softmax, so the weights do not saturate as d_k grows.")
def _(q, k, v, mask=None):
    return _attend(q, k, v, mask, 1.0)


@sdpa.misconception("scale_by_d", "You divided by d_k; the scale is 1/√d_k (math.sqrt(q.shape[-1])).")
def _(q, k, v, mask=None):
    return _attend(q, k, v, mask, 1.0 / q.shape[-1])


@sdpa.misconception("scale_by_d_v", "You scaled by the value width. The scale is 1/√d_k, the width of the "
                    "queries and keys (q.shape[-1]), not of the values.")
def _(q, k, v, mask=None):
    return _attend(q, k, v, mask, 1.0 / math.sqrt(v.shape[-1]))


@sdpa.misconception("scaled_after_softmax", "Scale the scores, not the weights: softmax(q kᵀ / √d_k). Dividing "
                    "the weights by √d_k after the softmax leaves rows that no longer sum to 1.")
def _(q, k, v, mask=None):
    return _attend(q, k, v, mask, 1.0 / math.sqrt(q.shape[-1]), scale_weights=True)


@sdpa.misconception("mask_ignored", "A mask was given and ignored: set the scores where mask is True to -inf "
                    "(scores.masked_fill(mask, float('-inf'))) before the softmax.")
def _(q, k, v, mask=None):
    return _attend(q, k, v, None, 1.0 / math.sqrt(q.shape[-1]))


@sdpa.misconception("softmax_wrong_axis", "The softmax ran over the query axis. Each query's weights over the "
                    "keys must sum to 1: softmax(dim=-1).")
def _(q, k, v, mask=None):
    return _attend(q, k, v, mask, 1.0 / math.sqrt(q.shape[-1]), softmax_dim=-2)


@sdpa.misconception("keys_not_transposed", "q @ k multiplies queries by untransposed keys; the scores are "
                    "q @ k.transpose(-2, -1), shape (..., t, s).")
def _(q, k, v, mask=None):
    scores = (q @ k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    w = torch.softmax(scores, dim=-1)
    return w @ v, w


@sdpa.misconception("mask_inverted", "The mask is inverted: True marks a *blocked* key, so fill the scores where "
                    "mask is True (masked_fill(mask, -inf)), not where it is False.")
def _(q, k, v, mask=None):
    return _attend(q, k, v, None if mask is None else ~mask, 1.0 / math.sqrt(q.shape[-1]))


@sdpa.misconception("mask_after_softmax", "The mask was applied after the softmax, so the remaining weights no longer "
                    "sum to 1. Set blocked scores to -inf before the softmax.")
def _(q, k, v, mask=None):
    _, w = _attend(q, k, v, None, 1.0 / math.sqrt(q.shape[-1]))
    if mask is not None:
        w = w.masked_fill(mask, 0.0)
    return w @ v, w


@sdpa.misconception("mask_with_zero", "Blocked scores were set to 0, but exp(0) = 1 still gives them weight. "
                    "Fill them with -inf so their weight is exactly 0.")
def _(q, k, v, mask=None):
    return _attend(q, k, v, mask, 1.0 / math.sqrt(q.shape[-1]), fill=0.0)


# --- SelfAttention ------------------------------------------------------------------------------

self_attention = EPISODE.exercise("SelfAttention", method="forward")


@self_attention.check(case(b=2, t=5, d_in=3, d_out=4), case(b=1, t=1, d_in=6, d_out=2),
                      case(b=3, t=4, d_in=5, d_out=7, qkv_bias=True),
                      case(b=2, t=6, d_in=4, d_out=3, dtype="float64"), tolerances=SOFTMAX_IN_FLOAT32)
def forward_random(impl, c, gen):
    """forward on random inputs with seeded weights"""
    dtype = dtype_of(c)
    attn = build(impl.SelfAttention, c.d_in, c.d_out, qkv_bias=c.params.get("qkv_bias", False), gen=gen).to(dtype)
    return attn(randn(gen, c.b, c.t, c.d_in, dtype=dtype))


@self_attention.check(case(b=3, t=7, d_in=6, d_out=5, noncontiguous=True), case(b=2, t=3, d_in=8, d_out=16),
                      hidden=True)
def forward_hidden(impl, c, gen):
    """forward on non-contiguous inputs and a wide projection"""
    attn = build(impl.SelfAttention, c.d_in, c.d_out, gen=gen)
    x = randn(gen, c.b, c.t, c.d_in)
    return attn(noncontiguous(x) if c.params.get("noncontiguous") else x)


@self_attention.misconception("scale_by_d_in", "You scaled by √d_in, the input width. The keys have width d_out: "
                              "scale by 1/√(keys.shape[-1]).")
def _(self, x):
    q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
    return _attend(q, k, v, None, 1.0 / math.sqrt(x.shape[-1]))[0]


@self_attention.misconception("no_scale", "The scores were not scaled by 1/√d_out before the softmax.")
def _(self, x):
    q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
    return _attend(q, k, v, None, 1.0)[0]


@self_attention.misconception("scaled_after_softmax", "Scale the scores, not the weights: softmax(q kᵀ / √d_out), "
                              "then multiply by the values.")
def _(self, x):
    q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
    return _attend(q, k, v, None, 1.0 / math.sqrt(k.shape[-1]), scale_weights=True)[0]


@self_attention.misconception("queries_keys_swapped", "Queries and keys are swapped: scores[i, j] must be "
                              "query_i · key_j, i.e. W_query(x) @ W_key(x).transpose(1, 2).")
def _(self, x):
    q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
    return _attend(k, q, v, None, 1.0 / math.sqrt(q.shape[-1]))[0]


@self_attention.misconception("softmax_wrong_axis", "The softmax ran over dim=1 (the queries). Normalise over the "
                              "keys, the last axis: softmax(scores, dim=-1).")
def _(self, x):
    q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
    return _attend(q, k, v, None, 1.0 / math.sqrt(q.shape[-1]), softmax_dim=1)[0]
