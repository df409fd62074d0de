"""Checks for episode 6: the causal mask, causal attention, and the CausalAttention layer."""

import math

import torch

from ..compare import Tolerance
from ..probing import build, dtype_of, future_change, named, noncontiguous, randn
from ..registry import Episode, case
from .ep04 import SOFTMAX_IN_FLOAT32

EPISODE = Episode("ep06", "Causal Attention Explained: Don’t Peek into the Future",
                  video="https://youtu.be/c6Kkj6iLeBg", module="ep06_causal_attention")


def _attend(q, k, v, mask, softmax_first=False):
    """Attention with a boolean mask, either before the softmax or (a bug) zeroing after it."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])
    if softmax_first:
        w = torch.softmax(scores, dim=-1).masked_fill(mask, 0.0)
    else:
        w = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
    return w @ v, w


def _triu(t, s, diagonal):
    return torch.ones(t, s, dtype=torch.bool).triu(diagonal=diagonal)


# --- causal_mask ----------------------------------------------------------------------------

mask = EPISODE.exercise("causal_mask")


@mask.check(case(t=4), case(t=1), case(t=6))
def square(impl, c, gen):
    """causal_mask(t): True strictly above the diagonal"""
    return impl.causal_mask(c.t)


@mask.check(case(t=3, s=7), case(t=1, s=5), case(t=5, s=5))
def more_keys_than_queries(impl, c, gen):
    """causal_mask(t, s) with s ≥ t aligns the last query with the last key (cached decoding)"""
    return impl.causal_mask(c.t, c.s)


@mask.check(case(t=2, s=9), case(t=8), hidden=True)
def hidden_masks(impl, c, gen):
    """other sizes"""
    return impl.causal_mask(c.t, c.params.get("s"))


@mask.misconception("blocks_diagonal", "A token may attend to itself: block only keys strictly after the query "
                    "(triu with diagonal=1), not the diagonal too.")
def _(t, s=None):
    s = t if s is None else s
    return _triu(t, s, s - t)


@mask.misconception("allowed_not_blocked", "You returned the *allowed* positions (the torch.tril pattern). This "
                    "mask marks the blocked ones: True strictly above the diagonal, where the future is.")
def _(t, s=None):
    s = t if s is None else s
    return ~_triu(t, s, s - t + 1)


@mask.misconception("not_aligned", "With s > t keys (a cache), query i sits at position i + s - t. Shift the "
                    "diagonal by s - t: triu(diagonal=s - t + 1).")
def _(t, s=None):
    return _triu(t, t if s is None else s, 1)


@mask.misconception("float_mask", "Return a boolean mask (dtype torch.bool, True = blocked), not 0/1 floats.")
def _(t, s=None):
    s = t if s is None else s
    return _triu(t, s, s - t + 1).float()


# --- causal_attention --------------------------------------------------------------------------

causal = EPISODE.exercise("causal_attention")


def qkv(gen, c):
    dtype = dtype_of(c)
    q = randn(gen, c.b, c.t, c.d, dtype=dtype)
    k = randn(gen, c.b, c.params.get("s", c.t), c.d, dtype=dtype)
    v = randn(gen, c.b, c.params.get("s", c.t), c.d_v, dtype=dtype)
    return q, k, v


@causal.check(case(b=2, t=5, d=4, d_v=3), case(b=1, t=1, d=6, d_v=2), case(b=3, t=6, d=5, d_v=4, dtype="float64"),
              tolerances=SOFTMAX_IN_FLOAT32)
def random_inputs(impl, c, gen):
    """out and weights for random q, k, v"""
    return named(impl.causal_attention(*qkv(gen, c)), "out", "weights")


@causal.check(case(b=2, t=2, s=6, d=4, d_v=3), case(b=1, t=1, s=5, d=3, d_v=5))
def cached_decoding(impl, c, gen):
    """t new queries against s ≥ t keys: the last query sees every key"""
    return named(impl.causal_attention(*qkv(gen, c)), "out", "weights")


@causal.check(case(b=2, t=7, d=4, d_v=3, i=2), case(b=1, t=5, d=3, d_v=3, i=0))
def no_peeking(impl, c, gen):
    """changing tokens after position i leaves the outputs up to i unchanged"""
    return future_change(impl.causal_attention, list(qkv(gen, c)), c.i, gen)


@causal.check(case(b=3, t=8, s=8, d=5, d_v=4, noncontiguous=True), case(b=2, t=3, s=7, d=6, d_v=2), hidden=True)
def hidden_inputs(impl, c, gen):
    """non-contiguous inputs; a cached-decoding case"""
    q, k, v = qkv(gen, c)
    if c.params.get("noncontiguous"):
        q, k, v = noncontiguous(q), noncontiguous(k), noncontiguous(v)
    return named(impl.causal_attention(q, k, v), "out", "weights")


@causal.misconception("no_mask", "Nothing is masked: every query sees the future. Block the keys after each query "
                      "with causal_mask(t, s) before the softmax.")
def _(q, k, v):
    return _attend(q, k, v, torch.zeros(q.shape[-2], k.shape[-2], dtype=torch.bool))


@causal.misconception("blocks_diagonal", "Your mask also blocks the diagonal, so token 0 sees nothing (a NaN row) and "
                      "no token sees itself. Block only keys strictly after the query.")
def _(q, k, v):
    t, s = q.shape[-2], k.shape[-2]
    return _attend(q, k, v, _triu(t, s, s - t))


@causal.misconception("mask_after_softmax", "You zeroed the future weights after the softmax, so rows no longer sum "
                      "to 1. Mask the scores with -inf before the softmax.")
def _(q, k, v):
    t, s = q.shape[-2], k.shape[-2]
    return _attend(q, k, v, _triu(t, s, s - t + 1), softmax_first=True)


@causal.misconception("not_aligned", "With more keys than queries (decoding with a cache), the queries are the last "
                      "t positions: pass both lengths, causal_mask(t, s).")
def _(q, k, v):
    return _attend(q, k, v, _triu(q.shape[-2], k.shape[-2], 1))


# --- CausalAttention -----------------------------------------------------------------------------

layer = EPISODE.exercise("CausalAttention", method="forward")


def make_layer(impl, c, gen):
    return build(impl.CausalAttention, c.d_in, c.d_out, c.ctx, c.params.get("dropout", 0.3),
                 qkv_bias=c.params.get("qkv_bias", False), gen=gen).to(dtype_of(c))


@layer.check(case(b=2, t=5, d_in=3, d_out=4, ctx=8), case(b=1, t=1, d_in=4, d_out=2, ctx=6),
             case(b=2, t=6, d_in=5, d_out=3, ctx=6, qkv_bias=True),
             case(b=3, t=4, d_in=6, d_out=5, ctx=10, dtype="float64"), tolerances=SOFTMAX_IN_FLOAT32)
def forward_eval(impl, c, gen):
    """forward in eval mode (dropout inactive) on random inputs"""
    return make_layer(impl, c, gen)(randn(gen, c.b, c.t, c.d_in, dtype=dtype_of(c)))


@layer.check(case(b=2, t=6, d_in=4, d_out=3, ctx=8, i=2), case(b=1, t=4, d_in=3, d_out=5, ctx=4, i=0))
def no_peeking(impl, c, gen):
    """changing tokens after position i leaves the outputs up to i unchanged"""
    attn = make_layer(impl, c, gen)
    return future_change(attn, [randn(gen, c.b, c.t, c.d_in)], c.i, gen)


@layer.check(case(t=32, b=16, p=0.25), tolerances={"scalar": Tolerance(0.04, 0.0)})
def dropout_in_training(impl, c, gen):
    """in train mode, dropout zeroes a fraction p of the attention weights and rescales the rest by 1/(1-p)"""
    torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=gen)))
    attn = impl.CausalAttention(c.t, c.t, c.t, c.p).train()
    tokens = torch.eye(c.t).expand(c.b, c.t, c.t)  # one-hot tokens
    attn.W_query.weight.data.zero_()
    attn.W_key.weight.data.zero_()  # all scores 0: token i weighs each of 0..i by 1/(i+1)
    attn.W_value.weight.data.copy_(torch.eye(c.t))  # so the output *is* the weight matrix
    w = attn(tokens)
    past = torch.ones(c.t, c.t, dtype=torch.bool).tril().expand_as(w)
    kept = (w != 0) & past
    position = torch.arange(1, c.t + 1, dtype=w.dtype).view(1, -1, 1).expand_as(w)
    attn.W_value.weight.data.fill_(1.0)  # now every output is the sum of a row of kept weights
    row_sums = attn(tokens)[:, 4:]
    return {
        "kept_fraction": kept.sum().item() / past.sum().item(),
        "kept_weight_times_count": (w * position)[kept].mean().item() if kept.any() else 0.0,
        "future_weight": w.masked_fill(past, 0.0).abs().max().item(),
        "zero_outputs_fraction": (row_sums == 0).float().mean().item(),
    }


@layer.check(case(b=3, t=7, d_in=6, d_out=5, ctx=7, noncontiguous=True), case(b=2, t=3, d_in=8, d_out=16, ctx=12),
             hidden=True)
def forward_hidden(impl, c, gen):
    """non-contiguous inputs; a wide projection"""
    x = randn(gen, c.b, c.t, c.d_in)
    return make_layer(impl, c, gen)(noncontiguous(x) if c.params.get("noncontiguous") else x)


def _layer(self, x, mask, dropout_where="weights", softmax_first=False, scaled=True, fill=float("-inf")):
    """CausalAttention.forward with a given mask, fill, scaling and dropout placement (for the variants below)."""
    q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
    scores = q @ k.transpose(1, 2) / (math.sqrt(k.shape[-1]) if scaled else 1.0)
    if dropout_where == "scores":
        scores = self.dropout(scores)
    if softmax_first:
        w = torch.softmax(scores, dim=-1).masked_fill(mask, 0.0)
    else:
        w = torch.softmax(scores.masked_fill(mask, fill), dim=-1)
    if dropout_where == "weights":
        w = self.dropout(w)
    out = w @ v
    return self.dropout(out) if dropout_where == "output" else out


@layer.misconception("no_mask", "Nothing is masked, so outputs depend on later tokens. Fill the scores above the "
                     "diagonal (self.mask[:t, :t]) with -inf before the softmax.")
def _(self, x):
    t = x.shape[1]
    return _layer(self, x, torch.zeros(t, t, dtype=torch.bool))


@layer.misconception("blocks_diagonal", "Your mask also blocks the diagonal (token 0 sees nothing: NaN). Block only "
                     "keys strictly after the query: self.mask is True above the diagonal only.")
def _(self, x):
    t = x.shape[1]
    return _layer(self, x, _triu(t, t, 0))


@layer.misconception("mask_after_softmax", "You zeroed the future weights after the softmax, so rows no longer sum "
                     "to 1. Mask the scores with -inf before the softmax.")
def _(self, x):
    t = x.shape[1]
    return _layer(self, x, self.mask[:t, :t], softmax_first=True)


@layer.misconception("no_scale", "The scores were not scaled: divide q kᵀ by √d_out (keys.shape[-1]) before the "
                     "mask and the softmax.")
def _(self, x):
    t = x.shape[1]
    return _layer(self, x, self.mask[:t, :t], scaled=False)


@layer.misconception("mask_with_zero", "Masked scores set to 0 still get weight (exp(0) = 1): fill them with -inf, "
                     "scores.masked_fill(self.mask[:t, :t], float('-inf')).")
def _(self, x):
    t = x.shape[1]
    return _layer(self, x, self.mask[:t, :t], fill=0.0)


@layer.misconception("dropout_on_output", "Dropout belongs on the attention weights (after the softmax), not on the "
                     "output: self.dropout(weights) @ values.")
def _(self, x):
    t = x.shape[1]
    return _layer(self, x, self.mask[:t, :t], dropout_where="output")


@layer.misconception("dropout_on_scores", "Dropout was applied to the scores before the softmax, where a zeroed score "
                     "still gets weight. Apply self.dropout to the weights after the softmax.")
def _(self, x):
    t = x.shape[1]
    return _layer(self, x, self.mask[:t, :t], dropout_where="scores")


@layer.misconception("no_dropout", "In training mode the attention weights must go through self.dropout (after the "
                     "softmax); your forward never applies it.")
def _(self, x):
    t = x.shape[1]
    return _layer(self, x, self.mask[:t, :t], dropout_where=None)
