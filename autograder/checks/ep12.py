"""Checks for episode 12: DeepSeek-V2's KV-cache table, latent compression and expansion, absorption."""

import torch
from torch.overrides import TorchFunctionMode

from ..probing import dtype_of, named, noncontiguous, randn
from ..registry import Episode, case

EPISODE = Episode("ep12", "Multi-Head Latent Attention From Scratch", video="https://youtu.be/NlDQUj1olXM",
                  module="ep12_mla_theory")


class _NewTensors(TorchFunctionMode):
    """Inside the block, records the size of the largest tensor any torch call creates.

    Views of tensors that existed before (inputs, weights, a cache) share their
    storage and are not counted; every other result is counted by the size of
    its storage, so a view of a fresh tensor counts as that tensor.
    """

    def __init__(self, existing):
        super().__init__()
        self.existing = {t.untyped_storage().data_ptr() for t in existing}
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.existing:
                self.largest = max(self.largest, t.untyped_storage().nbytes() // t.element_size())
        return out


def forms_per_head_tensor(fn, existing, per_head_elements):
    """Calls ``fn()``; returns its result and whether it created a tensor as large as per-head keys or values.

    Args:
        fn: A function of no arguments (the call under test).
        existing: Tensors that exist before the call (inputs, parameters, caches).
        per_head_elements (int): ``b · s · h · d``, the size of the per-head keys
            (or values) of all ``s`` attended tokens; the sizes of a case are chosen
            so that an absorbed computation needs no tensor this large.

    Returns:
        tuple: ``(fn(), bool)``.
    """
    with _NewTensors(existing) as watch:
        out = fn()
    return out, watch.largest >= per_head_elements


def watched(fn, inputs, per_head_elements, result, per_head):
    """``fn(*inputs)`` and whether it formed a tensor as large as the per-head ``per_head`` (keys or values)."""
    out, formed = forms_per_head_tensor(lambda: fn(*inputs), inputs, per_head_elements)
    return {result: out, f"formed_per_head_{per_head}": formed}


def _inputs(gen, c, *shapes, scale=1.0):
    """Seeded tensors of the given shapes in the case's dtype (non-contiguous if the case asks)."""
    xs = [randn(gen, *shape, dtype=dtype_of(c), scale=scale) for shape in shapes]
    return [noncontiguous(x) for x in xs] if c.params.get("noncontiguous") else xs


# --- kv_cache_elements_per_token ----------------------------------------------------------------

elements = EPISODE.exercise("kv_cache_elements_per_token")


def table(impl, c):
    """The four rows of DeepSeek-V2's Table 1 for the case's sizes."""
    sizes = (c.layers, c.heads, c.head_dim)
    return {
        "mha": impl.kv_cache_elements_per_token("mha", *sizes),
        "gqa": impl.kv_cache_elements_per_token("gqa", *sizes, n_groups=c.groups),
        "mqa": impl.kv_cache_elements_per_token("mqa", *sizes),
        "mla": impl.kv_cache_elements_per_token("mla", *sizes, kv_lora_rank=c.rank, rope_head_dim=c.rope),
    }


@elements.check(case(layers=3, heads=4, head_dim=6, groups=2, rank=10, rope=3),
                case(layers=1, heads=1, head_dim=2, groups=1, rank=8, rope=1),
                case(layers=60, heads=128, head_dim=128, groups=8, rank=512, rope=64))
def table_1(impl, c, gen):
    """elements per token for MHA, GQA, MQA and MLA (the last case has DeepSeek-V2's sizes)"""
    return table(impl, c)


@elements.check(case(layers=4, heads=6, head_dim=8, groups=3, rank=12, rope=0))
def mla_without_rope(impl, c, gen):
    """MLA without a RoPE key (rope_head_dim=0) caches only the latent"""
    return table(impl, c)


@elements.check(case(layers=2, heads=16, head_dim=8), case(layers=60, heads=128, head_dim=128))
def mla_equals_gqa_with_2_25_groups(impl, c, gen):
    """with d_c = 4·d_h and d_h^R = d_h/2, MLA caches as much as GQA with 2.25 groups"""
    sizes = (c.layers, c.heads, c.head_dim)
    return {"mla": impl.kv_cache_elements_per_token("mla", *sizes, kv_lora_rank=4 * c.head_dim,
                                                    rope_head_dim=c.head_dim // 2),
            "gqa_2.25_groups": impl.kv_cache_elements_per_token("gqa", *sizes, n_groups=2.25)}


def raised(fn, *args, **kwargs) -> str:
    """``"ValueError"`` if the call raises one, else ``"no error"`` (other exceptions propagate)."""
    try:
        fn(*args, **kwargs)
    except ValueError:
        return "ValueError"
    return "no error"


@elements.check(case(layers=2, heads=4, head_dim=8))
def missing_arguments(impl, c, gen):
    """a ValueError when the mechanism's own argument is missing, or the mechanism is unknown"""
    f, sizes = impl.kv_cache_elements_per_token, (c.layers, c.heads, c.head_dim)
    return {"gqa_without_n_groups": raised(f, "gqa", *sizes),
            "mla_without_kv_lora_rank": raised(f, "mla", *sizes, rope_head_dim=4),
            "mla_without_rope_head_dim": raised(f, "mla", *sizes, kv_lora_rank=16),
            "unknown_mechanism": raised(f, "mha2", *sizes)}


@elements.check(case(layers=61, heads=128, head_dim=192, groups=16, rank=512, rope=64),
                case(layers=5, heads=12, head_dim=10, groups=4, rank=7, rope=2), hidden=True)
def hidden_sizes(impl, c, gen):
    """other sizes"""
    return table(impl, c)


def _elements(mechanism, n_layers, n_heads, head_dim, n_groups=None, kv_lora_rank=None, rope_head_dim=None,
              *, kv_factor=2, latent_factor=1, rope_heads=1, gqa_heads=None, layers=True):
    """The table with one factor changed (for the variants below); missing arguments count as 0."""
    per_layer = {
        "mha": kv_factor * n_heads * head_dim,
        "gqa": kv_factor * (gqa_heads or n_groups or 0) * head_dim,
        "mqa": kv_factor * head_dim,
        "mla": latent_factor * ((kv_lora_rank or 0) + rope_heads * (rope_head_dim or 0)),
    }[mechanism]
    return per_layer * (n_layers if layers else 1)


@elements.misconception("rope_key_per_head", "MLA's decoupled RoPE key is a single head shared by all query "
                        "heads: cache d_h^R per token and layer, not n_h · d_h^R. MLA's cache is (d_c + d_h^R) · l.")
def _(mechanism, n_layers, n_heads, head_dim, n_groups=None, kv_lora_rank=None, rope_head_dim=None):
    return _elements(mechanism, n_layers, n_heads, head_dim, n_groups, kv_lora_rank, rope_head_dim,
                     rope_heads=n_heads)


@elements.misconception("latent_counted_twice", "The latent c replaces both the keys and the values: it is cached "
                        "once. MLA's cache is (d_c + d_h^R) · l, without MHA's factor 2.")
def _(mechanism, n_layers, n_heads, head_dim, n_groups=None, kv_lora_rank=None, rope_head_dim=None):
    return _elements(mechanism, n_layers, n_heads, head_dim, n_groups, kv_lora_rank, rope_head_dim,
                     latent_factor=2)


@elements.misconception("gqa_heads_per_group", "GQA caches one key and one value head per *group*: 2 · n_g · d_h "
                        "· l. You used the number of query heads in a group, n_h / n_g.")
def _(mechanism, n_layers, n_heads, head_dim, n_groups=None, kv_lora_rank=None, rope_head_dim=None):
    return _elements(mechanism, n_layers, n_heads, head_dim, n_groups, kv_lora_rank, rope_head_dim,
                     gqa_heads=n_heads / n_groups if n_groups else None)


@elements.misconception("one_layer", "Every layer has its own cache: multiply the per-layer count by n_layers.")
def _(mechanism, n_layers, n_heads, head_dim, n_groups=None, kv_lora_rank=None, rope_head_dim=None):
    return _elements(mechanism, n_layers, n_heads, head_dim, n_groups, kv_lora_rank, rope_head_dim, layers=False)


@elements.misconception("missing_counts_as_zero", "A missing n_groups (for 'gqa') or kv_lora_rank / rope_head_dim "
                        "(for 'mla') must raise a ValueError that names it; treating None as 0 hides the mistake "
                        "and returns a wrong count. Unknown mechanisms raise ValueError too.")
def _(mechanism, n_layers, n_heads, head_dim, n_groups=None, kv_lora_rank=None, rope_head_dim=None):
    return _elements(mechanism if mechanism in ("mha", "gqa", "mqa", "mla") else "mha",
                     n_layers, n_heads, head_dim, n_groups, kv_lora_rank, rope_head_dim)


# --- compress_kv ----------------------------------------------------------------------------------

compress = EPISODE.exercise("compress_kv")


def compress_inputs(gen, c):
    return _inputs(gen, c, (*c.lead, c.t, c.d_model), (c.rank, c.d_model), scale=c.params.get("scale", 1.0))


@compress.check(case(lead=[2], t=5, d_model=6, rank=4), case(lead=[1], t=1, d_model=3, rank=2),
                case(lead=[3], t=4, d_model=7, rank=5, dtype="float64"), case(lead=[2, 3], t=2, d_model=8, rank=3))
def latents(impl, c, gen):
    """the latent of every token, for (b, t, d_model) and (b, h, t, d_model) hidden states"""
    return impl.compress_kv(*compress_inputs(gen, c))


# The large cases of this episode are float64: in float32 their sums of products of size ~10^3 can cancel
# to values near 0 that another summation order (einsum, a loop) rounds differently by more than the
# float32 tolerance, even the reference itself against exact arithmetic, at about 1% of seeds.
@compress.check(case(lead=[3], t=6, d_model=5, rank=4, noncontiguous=True),
                case(lead=[2], t=3, d_model=9, rank=6, scale=100.0, dtype="float64"), hidden=True)
def hidden_latents(impl, c, gen):
    """non-contiguous inputs; large hidden states"""
    return impl.compress_kv(*compress_inputs(gen, c))


@compress.misconception("weight_read_as_in_out", "w_dkv is in nn.Linear layout (out, in) = (d_c, d_model): the "
                        "latent is h @ w_dkv.T. Reshaping it to (d_model, d_c) scrambles its entries.")
def _(h, w_dkv):
    return h @ w_dkv.reshape(w_dkv.shape[1], w_dkv.shape[0])


@compress.misconception("latent_transposed", "The latents must be (…, t, d_c), one row per token: h @ w_dkv.T. "
                        "w_dkv @ hᵀ gives (…, d_c, t).")
def _(h, w_dkv):
    return w_dkv @ h.transpose(-2, -1)


@compress.misconception("normalised", "compress_kv is the paper's plain down-projection c = W^DKV h. DeepSeek's "
                        "code normalises the latent (kv_norm) in the layer, episode 13 — not here.")
def _(h, w_dkv):
    c = h @ w_dkv.T
    return c * torch.rsqrt(c.pow(2).mean(-1, keepdim=True) + 1e-6)


# --- expand_kv ---------------------------------------------------------------------------------

expand = EPISODE.exercise("expand_kv")


def expand_inputs(gen, c):
    """Latents ``(b, s, d_c)``, ``w_uk`` ``(h·d, d_c)`` and ``w_uv`` ``(h·d_v, d_c)``."""
    return _inputs(gen, c, (c.b, c.s, c.rank), (c.h * c.d, c.rank), (c.h * c.d_v, c.rank),
                   scale=c.params.get("scale", 1.0))


@expand.check(case(b=2, s=5, rank=6, h=3, d=4, d_v=2), case(b=1, s=1, rank=3, h=2, d=5, d_v=5),
              case(b=3, s=4, rank=5, h=6, d=2, d_v=3, dtype="float64"))
def keys_and_values(impl, c, gen):
    """every head's key and value, (b, s, h, d) and (b, s, h, d_v)"""
    return named(impl.expand_kv(*expand_inputs(gen, c), c.h), "k", "v")


@expand.check(case(b=2, s=6, rank=4, h=5, d=3, d_v=2, noncontiguous=True),
              case(b=3, s=2, rank=7, h=2, d=6, d_v=4, scale=50.0, dtype="float64"), hidden=True)
def hidden_keys_and_values(impl, c, gen):
    """non-contiguous inputs; large latents"""
    return named(impl.expand_kv(*expand_inputs(gen, c), c.h), "k", "v")


def _up(c, w, n_heads):
    return (c @ w.T).unflatten(-1, (n_heads, -1))


@expand.misconception("heads_before_tokens", "From MLA on the course uses DeepSeek's layout (b, s, h, d): split the "
                      "last axis into heads with unflatten(-1, (n_heads, -1)) and do not move the head axis forward.")
def _(c, w_uk, w_uv, n_heads):
    return _up(c, w_uk, n_heads).transpose(1, 2), _up(c, w_uv, n_heads).transpose(1, 2)


@expand.misconception("head_features_strided", "Head j owns the contiguous features j·d … (j+1)·d − 1 of "
                      "c @ w_uk.T: unflatten(-1, (n_heads, d)), not (d, n_heads) followed by a transpose.")
def _(c, w_uk, w_uv, n_heads):
    def strided(w):
        return (c @ w.T).unflatten(-1, (-1, n_heads)).transpose(-1, -2)
    return strided(w_uk), strided(w_uv)


@expand.misconception("keys_and_values_swapped", "Keys come from w_uk and values from w_uv, returned in that order "
                      "(k, v).")
def _(c, w_uk, w_uv, n_heads):
    return _up(c, w_uv, n_heads), _up(c, w_uk, n_heads)


@expand.misconception("weight_read_as_in_out", "The up-projections are in nn.Linear layout (out, in) = (h·d, d_c): "
                      "k = c @ w_uk.T. Reshaping a weight to (d_c, h·d) scrambles its entries.")
def _(c, w_uk, w_uv, n_heads):
    def read(w):
        return (c @ w.reshape(w.shape[1], w.shape[0])).unflatten(-1, (n_heads, -1))
    return read(w_uk), read(w_uv)


# --- absorbed_scores -------------------------------------------------------------------------------

scores = EPISODE.exercise("absorbed_scores")


def scores_inputs(gen, c):
    """Queries ``(b, t, h, d)``, latents ``(b, s, d_c)`` and ``w_uk`` ``(h·d, d_c)``."""
    return _inputs(gen, c, (c.b, c.t, c.h, c.d), (c.b, c.s, c.rank), (c.h * c.d, c.rank),
                   scale=c.params.get("scale", 1.0))


@scores.check(case(b=2, t=3, s=6, h=4, d=5, rank=7), case(b=1, t=1, s=1, h=2, d=3, rank=4),
              case(b=3, t=2, s=5, h=4, d=6, rank=7, dtype="float64"))
def equals_expanded_scores(impl, c, gen):
    """q·k for every query, head and key: (b, t, h, s)"""
    return impl.absorbed_scores(*scores_inputs(gen, c))


# Sizes where the absorbed computation needs no tensor as large as the keys (b·s·h·d elements).
@scores.check(case(b=2, t=1, s=9, h=3, d=4, rank=5), case(b=1, t=2, s=12, h=3, d=6, rank=4))
def keys_never_formed(impl, c, gen):
    """the scores, computed without creating a tensor as large as the per-head keys (b, s, h, d)"""
    return watched(impl.absorbed_scores, scores_inputs(gen, c), c.b * c.s * c.h * c.d, "scores", "keys")


@scores.check(case(b=3, t=4, s=7, h=2, d=6, rank=5, noncontiguous=True),
              case(b=2, t=4, s=3, h=5, d=6, rank=8, scale=30.0, dtype="float64"), hidden=True)
def hidden_scores(impl, c, gen):
    """non-contiguous inputs; large queries and latents"""
    return impl.absorbed_scores(*scores_inputs(gen, c))


@scores.check(case(b=3, t=1, s=10, h=4, d=3, rank=6, dtype="float64"), hidden=True)
def hidden_keys_never_formed(impl, c, gen):
    """float64, other sizes: still no per-head keys"""
    return keys_never_formed(impl, c, gen)


@scores.misconception("keys_materialised", "The scores are right, but you formed the per-head keys of every "
                      "cached token — what absorption avoids. Project each query head into the latent space "
                      "(q_j · W_j, with W_j = w_uk viewed as (h, d, d_c)) and take its dot products with c.")
def _(q, c, w_uk):
    k = _up(c, w_uk, q.shape[-2])
    return torch.einsum("bthd,bshd->bths", q, k)


@scores.misconception("weight_read_as_in_out", "w_uk is (h·d, d_c) in nn.Linear layout, so head j's block is "
                      "w_uk.view(h, d, d_c)[j] and the absorbed query is q_j @ W_j. Viewing it as (d_c, h, d) "
                      "absorbs with the wrong transpose.")
def _(q, c, w_uk):
    w = w_uk.reshape(w_uk.shape[1], q.shape[-2], q.shape[-1])
    return torch.einsum("bthc,bsc->bths", torch.einsum("bthd,chd->bthc", q, w), c)


@scores.misconception("keys_viewed_as_bhsd", "c @ w_uk.T is (b, s, h·d): split its last axis into heads, "
                      "(b, s, h, d). Viewing it as (b, h, s, d) mixes tokens and heads (and forms the keys, which "
                      "absorption avoids).")
def _(q, c, w_uk):
    k = (c @ w_uk.T).view(c.shape[0], q.shape[-2], c.shape[1], q.shape[-1])
    return torch.einsum("bthd,bhsd->bths", q, k)


@scores.misconception("scores_heads_first", "Return the scores in DeepSeek's layout (b, t, h, s), not (b, h, t, s).")
def _(q, c, w_uk):
    from solutions.ep12_mla_theory import absorbed_scores

    return absorbed_scores(q, c, w_uk).transpose(1, 2)


# --- absorbed_context ------------------------------------------------------------------------------

context = EPISODE.exercise("absorbed_context")


def context_inputs(gen, c):
    """Attention weights ``(b, t, h, s)`` (rows summing to 1), latents ``(b, s, d_c)``, ``w_uv`` ``(h·d_v, d_c)``."""
    logits, latents, w_uv = _inputs(gen, c, (c.b, c.t, c.h, c.s), (c.b, c.s, c.rank), (c.h * c.d_v, c.rank),
                                    scale=c.params.get("scale", 1.0))
    return torch.softmax(logits, dim=-1), latents, w_uv


@context.check(case(b=2, t=3, s=6, h=4, d_v=5, rank=7), case(b=1, t=1, s=1, h=2, d_v=3, rank=4),
               case(b=3, t=2, s=5, h=4, d_v=6, rank=7, dtype="float64"))
def equals_expanded_context(impl, c, gen):
    """Σ_s weight·value for every query and head: (b, t, h, d_v)"""
    return impl.absorbed_context(*context_inputs(gen, c))


@context.check(case(b=2, t=1, s=9, h=3, d_v=4, rank=5), case(b=1, t=2, s=12, h=3, d_v=6, rank=4))
def values_never_formed(impl, c, gen):
    """the outputs, computed without creating a tensor as large as the per-head values (b, s, h, d_v)"""
    return watched(impl.absorbed_context, context_inputs(gen, c), c.b * c.s * c.h * c.d_v, "context", "values")


@context.check(case(b=3, t=4, s=7, h=2, d_v=6, rank=5, noncontiguous=True),
               case(b=2, t=4, s=3, h=5, d_v=6, rank=8, scale=30.0, dtype="float64"), hidden=True)
def hidden_context(impl, c, gen):
    """non-contiguous inputs; peaked weights and large latents"""
    return impl.absorbed_context(*context_inputs(gen, c))


@context.check(case(b=3, t=1, s=10, h=4, d_v=3, rank=6, dtype="float64"), hidden=True)
def hidden_values_never_formed(impl, c, gen):
    """float64, other sizes: still no per-head values"""
    return values_never_formed(impl, c, gen)


@context.misconception("values_materialised", "The output is right, but you formed the per-head values of every "
                       "cached token. Average the latents first (weights @ c per head, (b, t, h, d_c)), then "
                       "up-project those t averages with each head's W_j (w_uv viewed as (h, d_v, d_c)).")
def _(weights, c, w_uv):
    return torch.einsum("bths,bshd->bthd", weights, _up(c, w_uv, weights.shape[-2]))


@context.misconception("weight_read_as_in_out", "w_uv is (h·d_v, d_c) in nn.Linear layout: head j's block is "
                       "w_uv.view(h, d_v, d_c)[j] and its output is W_j @ context_j. Viewing it as (d_c, h, d_v) "
                       "absorbs with the wrong transpose.")
def _(weights, c, w_uv):
    w = w_uv.reshape(w_uv.shape[1], weights.shape[-2], -1)
    return torch.einsum("bthc,chd->bthd", torch.einsum("bths,bsc->bthc", weights, c), w)


@context.misconception("context_heads_first", "Return the outputs in DeepSeek's layout (b, t, h, d_v), not "
                       "(b, h, t, d_v).")
def _(weights, c, w_uv):
    from solutions.ep12_mla_theory import absorbed_context

    return absorbed_context(weights, c, w_uv).transpose(1, 2)
