"""Checks for episode 10: multi-query attention and the size of its KV cache."""

from ..compare import Tolerance
from ..probing import build, dtype_of, future_change, randn
from ..registry import Episode, case
from .ep04 import SOFTMAX_IN_FLOAT32
from .ep07 import inputs
from .ep08 import attend_heads, dropout_of_one_head, head_misconceptions

EPISODE = Episode("ep10", "Multi-Query Attention Explained", video="https://youtu.be/Z6B51Odtn-Y",
                  module="ep10_multi_query_attention")

# --- MultiQueryAttention ------------------------------------------------------------------------

mqa = EPISODE.exercise("MultiQueryAttention", method="forward")


def make_mqa(impl, c, gen):
    return build(impl.MultiQueryAttention, c.d_in, c.h * c.d, c.h, c.ctx, 0.2,
                 qkv_bias=c.params.get("qkv_bias", False), gen=gen).to(dtype_of(c))


@mqa.check(case(b=2, t=5, d_in=6, h=3, d=4, ctx=8), case(b=1, t=1, d_in=4, h=2, d=3, ctx=4),
           case(b=3, t=4, d_in=5, h=4, d=2, ctx=6, qkv_bias=True),
           case(b=2, t=6, d_in=3, h=2, d=5, ctx=6, dtype="float64"), tolerances=SOFTMAX_IN_FLOAT32)
def forward_eval(impl, c, gen):
    """forward in eval mode: h query heads over one shared key/value head"""
    return make_mqa(impl, c, gen)(inputs(gen, c, c.b, c.t, c.d_in))


@mqa.check(case(b=2, t=6, d_in=4, h=3, d=2, ctx=8, i=2))
def no_peeking(impl, c, gen):
    """changing tokens after position i leaves the outputs up to i unchanged"""
    return future_change(make_mqa(impl, c, gen), [randn(gen, c.b, c.t, c.d_in)], c.i, gen)


@mqa.check(case(t=32, b=16, p=0.25), tolerances={"scalar": Tolerance(0.04, 0.0)})
def dropout_in_training(impl, c, gen):
    """in train mode, dropout zeroes a fraction p of the attention weights and rescales the rest by 1/(1-p)"""
    return dropout_of_one_head(lambda d_in, d_out, ctx, p: impl.MultiQueryAttention(d_in, d_out, 1, ctx, p), c, gen)


@mqa.check(case(b=3, t=7, d_in=6, h=2, d=3, ctx=7, noncontiguous=True), case(b=2, t=3, d_in=8, h=5, d=4, ctx=12),
           case(b=2, t=4, d_in=3, h=6, d=1, ctx=5, dtype="float64"), hidden=True, tolerances=SOFTMAX_IN_FLOAT32)
def forward_hidden(impl, c, gen):
    """non-contiguous inputs; more heads than tokens; width-1 heads"""
    return make_mqa(impl, c, gen)(inputs(gen, c, c.b, c.t, c.d_in))


def _forward(self, x, **bug):
    """MultiQueryAttention.forward with one part swapped for a buggy one (for the variants below)."""
    from solutions.ep07_multihead_visual import split_heads

    q = split_heads(self.W_query(x), self.num_heads)
    return attend_heads(self, q, self.W_key(x).unsqueeze(1), self.W_value(x).unsqueeze(1), **bug)


head_misconceptions(mqa, _forward, "scale_by_d_out", "merged_without_transpose", "no_mask", "no_out_proj",
                    "no_dropout")


# --- kv_cache_elements_per_token ------------------------------------------------------------

elements = EPISODE.exercise("kv_cache_elements_per_token")


def per_mechanism(impl, c, mechanisms=("mha", "mqa")):
    return {m: impl.kv_cache_elements_per_token(m, c.layers, c.heads, c.head_dim) for m in mechanisms}


@elements.check(case(layers=3, heads=4, head_dim=5), case(layers=1, heads=6, head_dim=2),
                case(layers=60, heads=128, head_dim=128))
def mha_and_mqa(impl, c, gen):
    """cached elements per token for MHA and MQA (the last case is DeepSeek-V2-sized)"""
    return per_mechanism(impl, c)


@elements.check(case(layers=5, heads=7, head_dim=3), case(layers=61, heads=128, head_dim=192), hidden=True)
def hidden_sizes(impl, c, gen):
    """other sizes"""
    return per_mechanism(impl, c)


def _elements(mechanism, n_layers, n_heads, head_dim, per_head=2, layers=True, mqa_heads=1):
    heads = n_heads if mechanism == "mha" else mqa_heads
    return per_head * heads * head_dim * (n_layers if layers else 1)


@elements.misconception("keys_only", "Both keys and values are cached: the count has a factor 2 (2 · n_h · d_h "
                        "· l for MHA).")
def _(mechanism, n_layers, n_heads, head_dim):
    return _elements(mechanism, n_layers, n_heads, head_dim, per_head=1)


@elements.misconception("one_layer", "Every layer has its own cache: multiply by the number of layers l.")
def _(mechanism, n_layers, n_heads, head_dim):
    return _elements(mechanism, n_layers, n_heads, head_dim, layers=False)


@elements.misconception("mqa_counts_heads", "MQA caches a single key and value head shared by all query heads: "
                        "2 · d_h · l per token, independent of n_h.")
def _(mechanism, n_layers, n_heads, head_dim):
    return _elements(mechanism, n_layers, n_heads, head_dim, mqa_heads=n_heads)
