"""Checks for episode 11: repeat_kv, grouped-query attention, MHA→GQA conversion and cache sizes."""

from ..compare import Tolerance
from ..probing import build, dtype_of, future_change, randn
from ..registry import Episode, case
from .ep04 import SOFTMAX_IN_FLOAT32
from .ep07 import inputs, split_without_transpose
from .ep08 import attend_heads, dropout_of_one_head, head_misconceptions

EPISODE = Episode("ep11", "Understand Grouped Query Attention (GQA)", video="https://youtu.be/kx3rETIxo4Q",
                  module="ep11_grouped_query_attention")


# --- repeat_kv ----------------------------------------------------------------------------------

repeat = EPISODE.exercise("repeat_kv")


@repeat.check(case(b=2, g=3, t=5, d=4, n_rep=2), case(b=1, g=2, t=1, d=3, n_rep=4),
              case(b=3, g=4, t=2, d=5, n_rep=1), case(b=2, g=2, t=3, d=6, n_rep=3, dtype="float64"))
def random_inputs(impl, c, gen):
    """(b, g, t, d) → (b, g·n_rep, t, d); head i is group i // n_rep"""
    return impl.repeat_kv(inputs(gen, c, c.b, c.g, c.t, c.d), c.n_rep)


@repeat.check(case(b=3, g=2, t=4, d=5, n_rep=3, noncontiguous=True), case(b=2, g=1, t=6, d=2, n_rep=5),
              case(b=1, g=5, t=3, d=4, n_rep=2), hidden=True)
def hidden_inputs(impl, c, gen):
    """non-contiguous inputs; one group (MQA); more groups than tokens"""
    return impl.repeat_kv(inputs(gen, c, c.b, c.g, c.t, c.d), c.n_rep)


@repeat.misconception("tiled_groups", "x.repeat(1, n_rep, 1, 1) tiles the groups (0, 1, 0, 1, …), so head i "
                      "would use group i % g. Query heads i·n_rep … (i+1)·n_rep − 1 share group i: use "
                      "x.repeat_interleave(n_rep, dim=1).")
def _(x, n_rep):
    return x.repeat(1, n_rep, 1, 1)


@repeat.misconception("repeated_tokens", "The copies go on the head axis (dim=1) of (b, g, t, d), not on the "
                      "tokens: x.repeat_interleave(n_rep, dim=1).")
def _(x, n_rep):
    return x.repeat_interleave(n_rep, dim=2)


# --- GroupedQueryAttention ----------------------------------------------------------------------

gqa = EPISODE.exercise("GroupedQueryAttention", method="forward")


def make_gqa(impl, c, gen):
    return build(impl.GroupedQueryAttention, c.d_in, c.h * c.d, c.h, c.g, c.ctx, 0.2,
                 qkv_bias=c.params.get("qkv_bias", False), gen=gen).to(dtype_of(c))


@gqa.check(case(b=2, t=5, d_in=6, h=4, g=2, d=3, ctx=8), case(b=1, t=1, d_in=4, h=6, g=3, d=2, ctx=4),
           case(b=3, t=4, d_in=5, h=3, g=3, d=2, ctx=6, qkv_bias=True),
           case(b=2, t=6, d_in=3, h=4, g=1, d=5, ctx=6, dtype="float64"), tolerances=SOFTMAX_IN_FLOAT32)
def forward_eval(impl, c, gen):
    """forward in eval mode: h query heads in g groups (g = h is MHA, g = 1 is MQA)"""
    return make_gqa(impl, c, gen)(inputs(gen, c, c.b, c.t, c.d_in))


@gqa.check(case(b=2, t=6, d_in=4, h=4, g=2, d=2, ctx=8, i=2))
def no_peeking(impl, c, gen):
    """changing tokens after position i leaves the outputs up to i unchanged"""
    return future_change(make_gqa(impl, c, gen), [randn(gen, c.b, c.t, c.d_in)], c.i, gen)


@gqa.check(case(t=32, b=16, p=0.25), tolerances={"scalar": Tolerance(0.04, 0.0)})
def dropout_in_training(impl, c, gen):
    """in train mode, dropout zeroes a fraction p of the attention weights and rescales the rest by 1/(1-p)"""
    return dropout_of_one_head(lambda d_in, d_out, ctx, p: impl.GroupedQueryAttention(d_in, d_out, 1, 1, ctx, p),
                               c, gen)


@gqa.check(case(b=3, t=7, d_in=6, h=6, g=2, d=3, ctx=7, noncontiguous=True),
           case(b=2, t=3, d_in=8, h=8, g=4, d=2, ctx=12, dtype="float64"), hidden=True, tolerances=SOFTMAX_IN_FLOAT32)
def forward_hidden(impl, c, gen):
    """non-contiguous inputs; more heads and groups"""
    return make_gqa(impl, c, gen)(inputs(gen, c, c.b, c.t, c.d_in))


def _forward(self, x, expand_kv=None, split_kv=None, **bug):
    """GroupedQueryAttention.forward with one part swapped for a buggy one (for the variants below)."""
    from solutions.ep07_multihead_visual import split_heads
    from solutions.ep11_grouped_query_attention import repeat_kv

    n_rep = self.num_heads // self.num_kv_groups
    q = split_heads(self.W_query(x), self.num_heads)
    k, v = ((expand_kv or repeat_kv)((split_kv or split_heads)(proj(x), self.num_kv_groups), n_rep)
            for proj in (self.W_key, self.W_value))
    return attend_heads(self, q, k, v, **bug)


@gqa.misconception("tiled_groups", "Query head i must use key/value group i // (h / g). Repeating the groups "
                   "with .repeat pairs head i with group i % g: use repeat_kv (repeat_interleave on dim 1).")
def _(self, x):
    return _forward(self, x, expand_kv=lambda y, n: y.repeat(1, n, 1, 1))


@gqa.misconception("kv_split_without_transpose", "W_key(x).view(b, g, t, d) mixes tokens into groups. View the "
                   "keys and values as (b, t, g, d), then .transpose(1, 2).")
def _(self, x):
    return _forward(self, x, split_kv=split_without_transpose)


head_misconceptions(gqa, _forward, "merged_without_transpose", "no_mask", "scale_by_d_out", "no_out_proj",
                    "no_dropout")


# --- mean_pool_kv_heads -------------------------------------------------------------------------

pool = EPISODE.exercise("mean_pool_kv_heads")


@pool.check(case(h=6, g=2, head_dim=3, d_in=5), case(h=4, g=4, head_dim=2, d_in=3),
            case(h=4, g=1, head_dim=3, d_in=2), case(h=6, g=3, head_dim=2, d_in=4, dtype="float64"))
def weights(impl, c, gen):
    """a (h·head_dim, d_in) key/value weight pooled to (g·head_dim, d_in)"""
    return impl.mean_pool_kv_heads(inputs(gen, c, c.h * c.head_dim, c.d_in), c.h, c.g)


@pool.check(case(h=4, g=2, head_dim=3))
def bias(impl, c, gen):
    """a (h·head_dim,) bias pooled the same way"""
    return impl.mean_pool_kv_heads(inputs(gen, c, c.h * c.head_dim), c.h, c.g)


@pool.check(case(h=8, g=2, head_dim=2, d_in=3, noncontiguous=True), case(h=6, g=6, head_dim=1, d_in=7),
            case(h=9, g=3, head_dim=4, d_in=2, dtype="float64"), hidden=True)
def hidden_weights(impl, c, gen):
    """a non-contiguous weight; other sizes"""
    return impl.mean_pool_kv_heads(inputs(gen, c, c.h * c.head_dim, c.d_in), c.h, c.g)


@pool.misconception("strided_groups", "Group j is the consecutive heads j·(h/g) … (j+1)·(h/g) − 1 — the ones "
                    "repeat_kv pairs with it — not every g-th head. Unflatten the first axis as (g, h/g, head_dim).")
def _(weight, num_heads, num_kv_groups):
    return weight.unflatten(0, (num_heads // num_kv_groups, num_kv_groups, -1)).mean(dim=0).flatten(0, 1)


@pool.misconception("summed_heads", "Mean-pool, don't sum: divide by the h/g heads of each group (.mean(dim=1)), "
                    "so the pooled head stays on the scale of the originals.")
def _(weight, num_heads, num_kv_groups):
    return weight.unflatten(0, (num_kv_groups, num_heads // num_kv_groups, -1)).sum(dim=1).flatten(0, 1)


@pool.misconception("first_head_of_group", "Keeping only the first head of each group discards the others; the "
                    "GQA paper averages all heads of the group (mean over the h/g heads).")
def _(weight, num_heads, num_kv_groups):
    return weight.unflatten(0, (num_kv_groups, num_heads // num_kv_groups, -1))[:, 0].flatten(0, 1)


# --- kv_cache_elements_per_token ------------------------------------------------------------

elements = EPISODE.exercise("kv_cache_elements_per_token")


def per_mechanism(impl, c):
    return {m: impl.kv_cache_elements_per_token(m, c.layers, c.heads, c.head_dim, n_groups=c.groups)
            for m in ("mha", "gqa", "mqa")}


@elements.check(case(layers=3, heads=8, head_dim=5, groups=2), case(layers=1, heads=6, head_dim=4, groups=3),
                case(layers=60, heads=128, head_dim=128, groups=8))
def mha_gqa_mqa(impl, c, gen):
    """cached elements per token for MHA, GQA and MQA (the last case is DeepSeek-V2-sized)"""
    return per_mechanism(impl, c)


@elements.check(case(layers=2, heads=12, head_dim=3, groups=4), case(layers=61, heads=128, head_dim=192, groups=16),
                hidden=True)
def hidden_sizes(impl, c, gen):
    """other sizes"""
    return per_mechanism(impl, c)


def _elements(mechanism, n_layers, n_heads, head_dim, n_groups, gqa_heads=None, per_head=2):
    heads = {"mha": n_heads, "gqa": gqa_heads or n_groups, "mqa": 1}[mechanism]
    return per_head * heads * head_dim * n_layers


@elements.misconception("gqa_counts_query_heads", "GQA caches one key and value head per *group*: "
                        "2 · n_g · d_h · l, not one per query head.")
def _(mechanism, n_layers, n_heads, head_dim, n_groups=None):
    return _elements(mechanism, n_layers, n_heads, head_dim, n_groups, gqa_heads=n_heads)


@elements.misconception("gqa_counts_heads_per_group", "n_h / n_g is the number of query heads in a group; the "
                        "cache holds one key and value head per group, n_g of them: 2 · n_g · d_h · l.")
def _(mechanism, n_layers, n_heads, head_dim, n_groups=None):
    return _elements(mechanism, n_layers, n_heads, head_dim, n_groups, gqa_heads=n_heads // n_groups)


@elements.misconception("keys_only", "Both keys and values are cached: every count has a factor 2.")
def _(mechanism, n_layers, n_heads, head_dim, n_groups=None):
    return _elements(mechanism, n_layers, n_heads, head_dim, n_groups, per_head=1)
