"""Checks for episode 8: MultiHeadAttention batched over heads."""

import math
from types import SimpleNamespace

import torch

from ..compare import Tolerance
from ..probing import build, dtype_of, future_change, randn
from ..registry import Episode, case
from . import ep06
from .ep04 import SOFTMAX_IN_FLOAT32
from .ep07 import inputs, merge_without_transpose, split_without_transpose

EPISODE = Episode("ep08", "Multi-Head Attention – Handwritten from Scratch", video="https://youtu.be/rvsEW-EsD-Y",
                  module="ep08_multihead_attention")

mha = EPISODE.exercise("MultiHeadAttention", method="forward")


def make_mha(impl, c, gen):
    return build(impl.MultiHeadAttention, c.d_in, c.h * c.d, c.ctx, 0.2, c.h,
                 qkv_bias=c.params.get("qkv_bias", False), gen=gen).to(dtype_of(c))


@mha.check(case(b=2, t=5, d_in=6, h=3, d=4, ctx=8), case(b=1, t=1, d_in=4, h=2, d=3, ctx=4),
           case(b=3, t=4, d_in=5, h=4, d=2, ctx=6, qkv_bias=True),
           case(b=2, t=6, d_in=3, h=2, d=5, ctx=6, dtype="float64"), tolerances=SOFTMAX_IN_FLOAT32)
def forward_eval(impl, c, gen):
    """forward in eval mode on random inputs (batch, tokens, heads and head width all differ)"""
    return make_mha(impl, c, gen)(inputs(gen, c, c.b, c.t, c.d_in))


@mha.check(case(b=2, t=6, d_in=4, h=3, d=2, ctx=8, i=2), case(b=1, t=4, d_in=3, h=2, d=3, ctx=4, i=0))
def no_peeking(impl, c, gen):
    """changing tokens after position i leaves the outputs up to i unchanged"""
    return future_change(make_mha(impl, c, gen), [randn(gen, c.b, c.t, c.d_in)], c.i, gen)


@mha.check(case(t=32, b=16, p=0.25), tolerances={"scalar": Tolerance(0.04, 0.0)})
def dropout_in_training(impl, c, gen):
    """in train mode, dropout zeroes a fraction p of the attention weights and rescales the rest by 1/(1-p)"""
    return dropout_of_one_head(lambda d_in, d_out, ctx, p: impl.MultiHeadAttention(d_in, d_out, ctx, p, 1), c, gen)


def dropout_of_one_head(make, c, gen):
    """Episode 6's dropout probe on ``make(d_in, d_out, context_length, dropout)``, a one-head layer (episodes 8
    to 11) whose out_proj is set to the identity, so that it is the CausalAttention the probe expects."""
    def single_head(d_in, d_out, context_length, dropout):
        attn = make(d_in, d_out, context_length, dropout)
        attn.out_proj.weight.data.copy_(torch.eye(d_out))
        attn.out_proj.bias.data.zero_()
        return attn

    return ep06.dropout_in_training(SimpleNamespace(CausalAttention=single_head), c, gen)


@mha.check(case(b=3, t=7, d_in=6, h=2, d=3, ctx=7, noncontiguous=True), case(b=2, t=3, d_in=8, h=5, d=4, ctx=12),
           case(b=2, t=4, d_in=3, h=1, d=6, ctx=5, dtype="float64"), hidden=True, tolerances=SOFTMAX_IN_FLOAT32)
def forward_hidden(impl, c, gen):
    """non-contiguous inputs, more heads than tokens, a single head"""
    return make_mha(impl, c, gen)(inputs(gen, c, c.b, c.t, c.d_in))


def attend_heads(self, q, k, v, mask=None, scale=None, merge=None, out_proj=True, dropout_where="weights"):
    """The rest of a multi-head forward from ``q`` ``(b, h, t, d)`` and ``k, v`` ``(b, h or 1, s, d)``,
    with one part made wrong on request: the misconception variants of episodes 8 to 11 share it.

    ``mask`` defaults to the causal mask aligned to the last query; ``scale`` to ``1/√head_dim``.
    """
    from solutions.ep07_multihead_visual import merge_heads

    t, s = q.shape[-2], k.shape[-2]
    mask = torch.ones(t, s, dtype=torch.bool).triu(diagonal=s - t + 1) if mask is None else mask
    scores = (q @ k.transpose(-2, -1) * (scale or 1 / math.sqrt(self.head_dim))).masked_fill(mask, float("-inf"))
    w = torch.softmax(scores, dim=-1)
    out = (merge or merge_heads)((self.dropout(w) if dropout_where == "weights" else w) @ v)
    out = self.out_proj(out) if out_proj else out
    return self.dropout(out) if dropout_where == "output" else out


def _forward(self, x, split=None, **bug):
    """MultiHeadAttention.forward with one part swapped for a buggy one (for the variants below)."""
    from solutions.ep07_multihead_visual import split_heads

    q, k, v = ((split or split_heads)(proj(x), self.num_heads) for proj in (self.W_query, self.W_key, self.W_value))
    return attend_heads(self, q, k, v, **bug)


# Mistakes of every multi-head layer (episodes 8, 10 and 11): name -> (hint, the wrong part, as the keyword
# arguments of attend_heads for a layer and its input).
HEAD_BUGS = {
    "merged_without_transpose": (
        "The heads were merged in the wrong order: (b, h, t, d) reshaped straight to (b, t, h·d) mixes tokens across "
        "heads. Transpose to (b, t, h, d) first: context.transpose(1, 2).contiguous().view(b, t, d_out).",
        lambda self, x: {"merge": merge_without_transpose}),
    "scale_by_d_out": (
        "The scores were scaled by 1/√d_out. Each head's queries and keys are head_dim = d_out / num_heads wide: "
        "scale by 1/√head_dim.", lambda self, x: {"scale": 1 / math.sqrt(self.d_out)}),
    "no_scale": ("The scores were not scaled: divide each head's q kᵀ by √head_dim before the softmax.",
                 lambda self, x: {"scale": 1.0}),
    "no_mask": ("The attention is causal: fill the scores above the diagonal (self.mask[:t, :t]) with -inf before the "
                "softmax, for every head.",
                lambda self, x: {"mask": torch.zeros(x.shape[1], x.shape[1], dtype=torch.bool)}),
    "no_out_proj": ("The merged heads must go through the output projection: return self.out_proj(context).",
                    lambda self, x: {"out_proj": False}),
    "no_dropout": ("In training mode the attention weights must go through self.dropout (after the softmax); your "
                   "forward never applies it.", lambda self, x: {"dropout_where": None}),
    "dropout_on_output": ("Dropout belongs on the attention weights (after the softmax), not on the output: "
                          "self.dropout(weights) @ values.", lambda self, x: {"dropout_where": "output"}),
}


def head_misconceptions(exercise, forward, *names):
    """Registers the :data:`HEAD_BUGS` ``names`` on ``exercise``, each as ``forward(self, x, **wrong part)``."""
    for name in names:
        hint, bug = HEAD_BUGS[name]
        exercise.misconception(name, hint)(lambda self, x, bug=bug: forward(self, x, **bug(self, x)))


@mha.misconception("split_without_transpose", "W_query(x).view(b, h, t, d) mixes tokens into heads. View as "
                   "(b, t, h, d), then .transpose(1, 2) to get (b, h, t, d).")
def _(self, x):
    return _forward(self, x, split=split_without_transpose)


head_misconceptions(mha, _forward, "merged_without_transpose", "scale_by_d_out", "no_mask", "no_scale", "no_out_proj",
                    "no_dropout", "dropout_on_output")
