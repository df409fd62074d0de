"""Checks for episode 17: DeepSeek-V3's MLA with decoupled RoPE, its softmax scale and its cache size."""

import importlib

import torch

from ..probing import build, dtype_of, future_change, noncontiguous, randn
from ..registry import Episode, case
from .ep04 import SOFTMAX_IN_FLOAT32
from .ep16 import BF16_ONE_STEP, config

EPISODE = Episode("ep17", "How DeepSeek Implemented Latent Attention (MLA + RoPE)",
                  video="https://youtu.be/m1x8vA_Tscc", module="ep17_mla_rope")

YARN = dict(max_seq_len=64, original_seq_len=16, rope_factor=4.0, mscale=0.707)  # YaRN on in the tiny model
V3_HEADS = dict(qk_nope_head_dim=128, qk_rope_head_dim=64)
V3_YARN = dict(max_seq_len=163840, original_seq_len=4096, rope_factor=40.0)


# --- mla_softmax_scale -----------------------------------------------------------------------------

scale = EPISODE.exercise("mla_softmax_scale")


@scale.check(case("tiny"), case("tiny_yarn", **YARN), case("deepseek_v3", **V3_HEADS, **V3_YARN, mscale=1.0))
def softmax_scale(impl, c, gen):
    """(d_nope + d_rope)^-0.5, times yarn_mscale(rope_factor, mscale)² when YaRN is on"""
    return impl.mla_softmax_scale(config(impl, c))


@scale.check(case("yarn_off_factor40", max_seq_len=64, original_seq_len=64, rope_factor=40.0),
             case("deepseek_v2", **V3_HEADS, **V3_YARN, mscale=0.707),
             case("equal_dims_yarn", qk_nope_head_dim=16, qk_rope_head_dim=16, max_seq_len=300, original_seq_len=100,
                  rope_factor=3.0, mscale=1.0), hidden=True)
def hidden_scales(impl, c, gen):
    """other configs, with YaRN on and off"""
    return impl.mla_softmax_scale(config(impl, c))


def _scale(head_dim, cfg, squared=True, yarn=None):
    from solutions.ep16_rope import yarn_mscale

    m = yarn_mscale(cfg.rope_factor, cfg.mscale)
    yarn = cfg.yarn_enabled if yarn is None else yarn
    return head_dim ** -0.5 * ((m * m if squared else m) if yarn else 1.0)


@scale.misconception("nope_dims_only", "The scale uses the full query/key width, rope dims included: "
                     "(qk_nope_head_dim + qk_rope_head_dim) ** -0.5 (cfg.qk_head_dim).")
def _(cfg):
    return _scale(cfg.qk_nope_head_dim, cfg)


@scale.misconception("value_width", "The scale is for the query·key dot products: use their width, "
                     "qk_nope_head_dim + qk_rope_head_dim (cfg.qk_head_dim), not v_head_dim.")
def _(cfg):
    return _scale(cfg.v_head_dim, cfg)


@scale.misconception("no_mscale", "With YaRN on (cfg.yarn_enabled), DeepSeek multiplies the scale by "
                     "yarn_mscale(cfg.rope_factor, cfg.mscale) squared.")
def _(cfg):
    return _scale(cfg.qk_head_dim, cfg, yarn=False)


@scale.misconception("mscale_not_squared", "The YaRN factor enters squared (once for the queries, once for the keys): "
                     "scale · mscale · mscale.")
def _(cfg):
    return _scale(cfg.qk_head_dim, cfg, squared=False)


@scale.misconception("mscale_always", "Apply the YaRN factor only when YaRN is on (cfg.yarn_enabled, i.e. "
                     "max_seq_len > original_seq_len).")
def _(cfg):
    return _scale(cfg.qk_head_dim, cfg, yarn=True)


# --- MLA -------------------------------------------------------------------------------------------

mla = EPISODE.exercise("MLA", method="forward")


def rope_table(reference, c, gen):
    """The reference RoPE table of the case's config, so that MLA is graded with exact rotations."""
    ep16 = importlib.import_module(".ep16_rope", reference.__package__)
    return ep16.freqs_cis_from_config(config(reference, c))


def causal_mask(t, start_pos=0):
    """DeepSeek's additive mask for ``t`` new tokens after ``start_pos`` cached ones (None for one token)."""
    if t == 1:
        return None
    return torch.full((t, start_pos + t), float("-inf")).triu(start_pos + 1)


def make_mla(impl, c, gen):
    """The target's ``MLA`` for the case's config and path, with seeded weights."""
    layer = build(impl.MLA, config(impl, c), absorb=c.absorb, gen=gen)
    return layer.to(dtype_of(c))


def tokens(impl, c, gen):
    """``(b, t, dim)`` inputs for case ``c`` (dtype, scale and non-contiguity as the case asks)."""
    x = randn(gen, c.b, c.t, config(impl, c).dim, dtype=dtype_of(c), scale=c.params.get("scale", 1.0))
    return noncontiguous(x) if c.params.get("noncontiguous") else x


def prefill_output(impl, c, gen, freqs_cis):
    layer = make_mla(impl, c, gen)
    return layer(tokens(impl, c, gen), 0, freqs_cis[:c.t], causal_mask(c.t))


@mla.check(case(b=2, t=5, absorb=False), case(b=2, t=5, absorb=True), case(b=1, t=1, absorb=True),
           case(b=3, t=4, q_lora_rank=0, absorb=False), case("yarn_b2_t6_absorb", b=2, t=6, absorb=True, **YARN),
           case("yarn_b2_t6_naive", b=2, t=6, absorb=False, q_lora_rank=0, **YARN), setup=rope_table)
def prefill(impl, c, gen, freqs_cis):
    """forward(x, 0, freqs_cis[:t], causal mask) on a prompt, naive and absorbed, with and without q_lora and YaRN"""
    return prefill_output(impl, c, gen, freqs_cis)


def decode_steps(impl, c, gen, freqs_cis):
    """The case's layer fed the prompt's first ``c.prefill`` tokens at once, the rest ``c.step`` (default 1) at
    a time; returns the layer and its outputs."""
    layer = make_mla(impl, c, gen)
    x = tokens(impl, c, gen)
    outputs, pos = [], 0
    for size in [c.prefill] + [c.params.get("step", 1)] * c.t:
        size = min(size, c.t - pos)
        if size <= 0:
            break
        outputs.append(layer(x[:, pos:pos + size], pos, freqs_cis[pos:pos + size], causal_mask(size, pos)))
        pos += size
    return layer, torch.cat(outputs, dim=1)


def decode(impl, c, gen, freqs_cis):
    """The outputs of :func:`decode_steps`."""
    return decode_steps(impl, c, gen, freqs_cis)[1]


@mla.check(case(b=2, t=7, prefill=3, absorb=False), case(b=2, t=7, prefill=3, absorb=True),
           case(b=1, t=4, prefill=1, q_lora_rank=0, absorb=True), setup=rope_table)
def cached_decoding(impl, c, gen, freqs_cis):
    """prefill, then one token at a time (start_pos = tokens cached, mask None): equals the full forward"""
    return decode(impl, c, gen, freqs_cis)


@mla.check(case(b=2, t=5, absorb=False), case(b=3, t=4, absorb=True), setup=rope_table)
def cache_holds_latent_and_k_pe(impl, c, gen, freqs_cis):
    """after a forward, kv_cache[:b, :t] holds kv_norm(latent), pe_cache[:b, :t] the rotated k_pe, nothing else"""
    layer = make_mla(impl, c, gen)
    layer(tokens(impl, c, gen), 0, freqs_cis[:c.t], causal_mask(c.t))
    return cache_contents(layer, c)


@mla.check(case(b=2, t=6, prefill=3, absorb=True), case(b=3, t=5, prefill=2, q_lora_rank=0, absorb=False),
           setup=rope_table)
def cache_after_decoding(impl, c, gen, freqs_cis):
    """a prompt, then one token at a time (start_pos = 3, 4, …): each token's latent and k_pe in its own row"""
    return cache_contents(decode_steps(impl, c, gen, freqs_cis)[0], c)


def cache_contents(layer, c):
    """The first ``c.t`` rows of both caches, what is left in the other rows, and the layer's tensors."""
    untouched = layer.kv_cache.clone()
    untouched[:c.b, :c.t] = 0
    untouched_pe = layer.pe_cache.clone()
    untouched_pe[:c.b, :c.t] = 0
    return {
        "kv_cache": layer.kv_cache[:c.b, :c.t],
        "pe_cache": layer.pe_cache[:c.b, :c.t],
        "rest_of_caches": untouched.abs().sum().item() + untouched_pe.abs().sum().item(),
        "buffers": sorted(name for name, _ in layer.named_buffers()),
        "tensor_attributes": sorted(k for k, v in vars(layer).items() if isinstance(v, torch.Tensor)),
    }


@mla.check(case(b=2, t=6, i=2, absorb=True), case(b=1, t=5, i=0, absorb=False), setup=rope_table)
def no_peeking(impl, c, gen, freqs_cis):
    """changing tokens after position i leaves the outputs up to i unchanged"""
    layer = make_mla(impl, c, gen)

    def forward(x):
        return layer(x, 0, freqs_cis[:c.t], causal_mask(c.t))

    return future_change(forward, [tokens(impl, c, gen)], c.i, gen)


@mla.check(case(b=2, t=3, s=7), tolerances=BF16_ONE_STEP)
def bfloat16_attention_weights(impl, c, gen):
    """attention_weights of bfloat16 scores: the softmax computed in float32, the weights rounded to bfloat16 once"""
    cfg = config(impl, c)
    scores = randn(gen, c.b, c.t, cfg.n_heads, c.s, dtype=torch.bfloat16, scale=4.0)
    return build(impl.MLA, cfg, gen=gen).attention_weights(scores, causal_mask(c.t, c.s - c.t))


OTHER_DIMS = dict(n_heads=3, dim=20, kv_lora_rank=10, qk_nope_head_dim=6, qk_rope_head_dim=8, v_head_dim=5)


@mla.check(case(b=3, t=7, absorb=True, noncontiguous=True),
           case("other_dims_naive", b=2, t=5, q_lora_rank=0, absorb=False, **OTHER_DIMS),
           case("other_dims_absorb", b=2, t=5, q_lora_rank=9, absorb=True, **OTHER_DIMS),
           case("large_yarn", b=2, t=9, q_lora_rank=0, absorb=True, scale=8.0, **YARN),
           case("float64", b=2, t=4, absorb=True, dtype="float64"),
           hidden=True, setup=rope_table, tolerances=SOFTMAX_IN_FLOAT32)
def hidden_prefill(impl, c, gen, freqs_cis):
    """non-contiguous input, other head dims, large magnitudes with YaRN, float64"""
    return prefill_output(impl, c, gen, freqs_cis)


@mla.check(case("chunks_of_2", b=2, t=8, prefill=3, step=2, absorb=True),
           case("other_dims", b=3, t=6, prefill=2, absorb=False, **OTHER_DIMS),
           case("yarn", b=1, t=6, prefill=4, absorb=True, **YARN), hidden=True, setup=rope_table)
def hidden_decoding(impl, c, gen, freqs_cis):
    """decoding in chunks (mask (t, start_pos + t)), other head dims, YaRN"""
    return decode(impl, c, gen, freqs_cis)


@mla.check(case("q_lora0_yarn", b=2, t=6, q_lora_rank=0, absorb=False, **YARN),
           case("other_dims", b=1, t=3, absorb=True, **OTHER_DIMS), hidden=True, setup=rope_table)
def hidden_cache(impl, c, gen, freqs_cis):
    """the caches after a forward, other configs"""
    return cache_holds_latent_and_k_pe(impl, c, gen, freqs_cis)


def _reference():
    from solutions.ep17_mla_rope import MLA

    return MLA


def _rope(layout="interleaved"):
    """A rotation ``(x, freqs_cis) -> x``: episode 16's interleaved one, the half-split one, or none."""
    from solutions.ep16_rope import apply_rope, apply_rope_half

    return {"interleaved": apply_rope, "half_split": lambda x, f: apply_rope_half(x, f.real, f.imag),
            "none": lambda x, f: x}[layout]


def _queries(self, x, freqs_cis, rope_first=False, q_norm=True, rope="interleaved"):
    """MLA.project_queries with a head's parts in the wrong order, without q_norm, or another rotation (for the
    variants below)."""
    if self.q_lora_rank == 0:
        q = self.wq(x)
    else:
        q = self.wq_b(self.q_norm(self.wq_a(x)) if q_norm else self.wq_a(x))
    q = q.view(*x.shape[:2], self.n_heads, self.qk_head_dim)
    if rope_first:
        q_pe, q_nope = torch.split(q, [self.qk_rope_head_dim, self.qk_nope_head_dim], dim=-1)
    else:
        q_nope, q_pe = torch.split(q, [self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)
    return q_nope, _rope(rope)(q_pe, freqs_cis)


def _compress(self, x, freqs_cis, k_pe_first=False, kv_norm=True, rope="interleaved", norm_k_pe=False):
    """MLA.compress_kv with one step changed (for the variants below)."""
    from solutions.ep02_building_blocks import rms_norm

    if k_pe_first:
        k_pe, latent = torch.split(self.wkv_a(x), [self.qk_rope_head_dim, self.kv_lora_rank], dim=-1)
    else:
        latent, k_pe = torch.split(self.wkv_a(x), [self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
    if norm_k_pe:
        k_pe = rms_norm(k_pe, torch.ones(self.qk_rope_head_dim, dtype=k_pe.dtype))
    k_pe = _rope(rope)(k_pe.unsqueeze(2), freqs_cis).squeeze(2)
    return (self.kv_norm(latent) if kv_norm else latent), k_pe


def _forward(self, x, start_pos, freqs_cis, mask, write_at=None, raw_latent=False, rope="interleaved"):
    """MLA.forward with the new tokens cached at rows ``write_at …`` (default ``start_pos``), their raw latents
    cached and normalised at every read, or another rotation (for the variants below); it attends over
    ``:start_pos + t``."""
    bsz, seqlen = x.shape[:2]
    end_pos, at = start_pos + seqlen, start_pos if write_at is None else write_at
    q_nope, q_pe = _queries(self, x, freqs_cis, rope=rope)
    self.kv_cache[:bsz, at:at + seqlen], self.pe_cache[:bsz, at:at + seqlen] = _compress(
        self, x, freqs_cis, kv_norm=not raw_latent, rope=rope)
    latent = self.kv_cache[:bsz, :end_pos]
    attend = self.attend_absorbed if self.absorb else self.attend_naive
    out = attend(q_nope, q_pe, self.kv_norm(latent) if raw_latent else latent, self.pe_cache[:bsz, :end_pos], mask)
    return self.wo(out.flatten(2))


@mla.misconception("rope_dims_first", "The rotary part of each query head is its *last* qk_rope_head_dim dims: "
                   "split each head as [q_nope | q_pe] (torch.split(q, [nope, rope], dim=-1)).",
                   method="project_queries")
def _(self, x, freqs_cis):
    return _queries(self, x, freqs_cis, rope_first=True)


@mla.misconception("no_q_norm", "With q_lora_rank > 0 the query is wq_b(q_norm(wq_a(x))): normalise the compressed "
                   "query with q_norm before wq_b.", method="project_queries")
def _(self, x, freqs_cis):
    return _queries(self, x, freqs_cis, q_norm=False)


@mla.misconception("k_pe_first", "wkv_a(x) is [latent | k_pe]: the latent comes first (kv_lora_rank dims), the "
                   "shared rotary key last (qk_rope_head_dim dims).", method="compress_kv")
def _(self, x, freqs_cis):
    return _compress(self, x, freqs_cis, k_pe_first=True)


@mla.misconception("no_kv_norm", "The latent must go through kv_norm before it is cached and expanded by wkv_b "
                   "(k_pe is not normalised).", method="compress_kv")
def _(self, x, freqs_cis):
    return _compress(self, x, freqs_cis, kv_norm=False)


@mla.misconception("k_pe_normalised", "k_pe is not normalised: kv_norm is for the latent only. Take k_pe as it comes "
                   "out of wkv_a(x) and rotate it.", method="compress_kv")
def _(self, x, freqs_cis):
    return _compress(self, x, freqs_cis, norm_k_pe=True)


@mla.misconception("k_pe_not_rotated", "k_pe must be rotated too (apply_rope on k_pe.unsqueeze(2), one shared "
                   "head): only rotated queries and keys make the scores depend on the offset.", method="compress_kv")
def _(self, x, freqs_cis):
    return _compress(self, x, freqs_cis, rope="none")


@mla.misconception("q_pe_not_rotated", "Rotate the queries' rope part too: q_pe = apply_rope(q_pe, freqs_cis). Only "
                   "when both q_pe and k_pe are rotated does q_pe·k_pe depend on the distance between the tokens.",
                   method="project_queries")
def _(self, x, freqs_cis):
    return _queries(self, x, freqs_cis, rope="none")


@mla.misconception("half_split_rope", "DeepSeek rotates interleaved pairs (x[2i], x[2i+1]): use episode 16's apply_rope "
                   "for q_pe and k_pe, not the half-split apply_rope_half of GPT-NeoX/Llama.")
def _(self, x, start_pos, freqs_cis, mask):
    return _forward(self, x, start_pos, freqs_cis, mask, rope="half_split")


@mla.misconception("mask_ignored", "The mask was not applied: add it to the scores before the softmax "
                   "(scores + mask.unsqueeze(1), the same (t, s) mask for every head).", method="attention_weights")
def _(self, scores, mask):
    return scores.softmax(dim=-1, dtype=torch.float32).to(scores.dtype)


@mla.misconception("softmax_in_bfloat16", "Compute the softmax in float32 and cast the weights back once "
                   "(scores.softmax(dim=-1, dtype=torch.float32).to(scores.dtype)), as DeepSeek does: exponentials "
                   "and sums in bfloat16 round at every step.", method="attention_weights")
def _(self, scores, mask):
    from solutions.ep02_building_blocks import softmax

    return softmax(scores if mask is None else scores + mask.to(scores.dtype).unsqueeze(1), dim=-1)


@mla.misconception("scale_without_rope_dims", "Use self.softmax_scale, which counts the rope dims: "
                   "(qk_nope_head_dim + qk_rope_head_dim) ** -0.5 (with YaRN's mscale²), not qk_nope_head_dim ** -0.5.")
def _(self, x, start_pos, freqs_cis, mask):
    self.softmax_scale = self.qk_nope_head_dim ** -0.5
    return _reference().forward(self, x, start_pos, freqs_cis, mask)


@mla.misconception("caches_raw_latent", "kv_cache must hold the *normalised* latent, kv_norm(latent), as DeepSeek "
                   "caches it: normalise once when writing, not at every read.")
def _(self, x, start_pos, freqs_cis, mask):
    return _forward(self, x, start_pos, freqs_cis, mask, raw_latent=True)


@mla.misconception("cache_written_at_row_0", "The new tokens belong in rows start_pos … start_pos + t - 1 of both "
                   "caches: kv_cache[:b, start_pos:start_pos + t] = … (and pe_cache alike). Writing them at [:b, :t] "
                   "overwrites the first cached tokens, and the rows you then attend over hold stale values.")
def _(self, x, start_pos, freqs_cis, mask):
    return _forward(self, x, start_pos, freqs_cis, mask, write_at=0)


@mla.misconception("cache_ignores_start_pos", "Write the new tokens at kv_cache[:b, start_pos:start_pos + t] and "
                   "attend over [:b, :start_pos + t]; with a cache, start_pos is the number of tokens already there.")
def _(self, x, start_pos, freqs_cis, mask):
    return _reference().forward(self, x, 0, freqs_cis, mask)


@mla.misconception("caches_per_head_keys", "Only the latent and k_pe are cached (kv_cache, pe_cache). Keeping "
                   "per-head keys or values (e.g. self.k_cache) defeats MLA: expand them from the latent when needed.")
def _(self, x, start_pos, freqs_cis, mask):
    out = _reference().forward(self, x, start_pos, freqs_cis, mask)
    kv = self.wkv_b(self.kv_cache[:x.shape[0], :start_pos + x.shape[1]])
    self.k_cache, self.v_cache = torch.split(kv, [self.n_heads * self.qk_nope_head_dim,
                                                  self.n_heads * self.v_head_dim], dim=-1)
    return out


@mla.misconception("absorbed_without_rope_scores", "In the absorbed path the scores are q_nope·k_nope (through the "
                   "latent) *plus* q_pe·k_pe: add torch.einsum('bthr,bsr->bths', q_pe, k_pe) before scaling.",
                   method="attend_absorbed")
def _(self, q_nope, q_pe, latent, k_pe, mask):
    return _reference().attend_absorbed(self, q_nope, torch.zeros_like(q_pe), latent, k_pe, mask)


@mla.misconception("absorbed_wkv_b_layout", "nn.Linear stores wkv_b.weight as (out, in) = (h·(d_nope + d_v), c): "
                   "view it as (n_heads, d_nope + d_v, kv_lora_rank), not (kv_lora_rank, n_heads, ·).",
                   method="attend_absorbed")
def _(self, q_nope, q_pe, latent, k_pe, mask):
    w = self.wkv_b.weight.reshape(self.kv_lora_rank, self.n_heads, -1).permute(1, 2, 0)
    w_uk, w_uv = torch.split(w, [self.qk_nope_head_dim, self.v_head_dim], dim=1)
    scores = (torch.einsum("bthd,hdc,bsc->bths", q_nope, w_uk, latent)
              + torch.einsum("bthr,bsr->bths", q_pe, k_pe)) * self.softmax_scale
    context = torch.einsum("bths,bsc->bthc", self.attention_weights(scores, mask), latent)
    return torch.einsum("bthc,hdc->bthd", context, w_uv)


# --- mla_cache_bytes_per_token ---------------------------------------------------------------------

cache_bytes = EPISODE.exercise("mla_cache_bytes_per_token")

V3_CACHE = dict(kv_lora_rank=512, qk_rope_head_dim=64, n_layers=61, n_heads=128)


def bytes_per_token(impl, c):
    cfg = config(impl, c)
    if "bytes_per_element" in c.params:
        return impl.mla_cache_bytes_per_token(cfg, c.bytes_per_element)
    return impl.mla_cache_bytes_per_token(cfg)


# Not the tiny config's 2 layers: with 2 layers and the default 2 bytes, forgetting the bytes looks like forgetting
# the layers, and the wrong hint would show.
@cache_bytes.check(case("tiny_3_layers", n_layers=3), case("deepseek_v3", **V3_CACHE),
                   case("deepseek_v3_fp8", **V3_CACHE, bytes_per_element=1))
def cache_size(impl, c, gen):
    """(kv_lora_rank + qk_rope_head_dim) · n_layers · bytes_per_element (default 2, bfloat16)"""
    return bytes_per_token(impl, c)


@cache_bytes.check(case("deepseek_v2", kv_lora_rank=512, qk_rope_head_dim=64, n_layers=60, n_heads=128,
                        bytes_per_element=2),
                   case("float32", kv_lora_rank=256, qk_rope_head_dim=32, n_layers=7, n_heads=16,
                        bytes_per_element=4), hidden=True)
def hidden_cache_sizes(impl, c, gen):
    """other configs and element sizes"""
    return bytes_per_token(impl, c)


@cache_bytes.misconception("per_head", "MLA's cache has no head axis: one latent and one shared k_pe per token and "
                           "layer, whatever n_heads is.")
def _(cfg, bytes_per_element=2):
    return (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * cfg.n_heads * cfg.n_layers * bytes_per_element


@cache_bytes.misconception("one_layer", "Every layer has its own cache: multiply by cfg.n_layers.")
def _(cfg, bytes_per_element=2):
    return (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * bytes_per_element


@cache_bytes.misconception("elements_not_bytes", "That is the number of cached elements; the size in bytes is "
                           "elements · bytes_per_element (2 for bfloat16, 1 for fp8, 4 for float32).")
def _(cfg, bytes_per_element=2):
    return (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * cfg.n_layers


@cache_bytes.misconception("bytes_per_element_ignored", "Multiply by the bytes_per_element you are given, not always "
                           "by 2: 1 for fp8, 4 for float32 (2, bfloat16, is only the default).")
def _(cfg, bytes_per_element=2):
    return (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * cfg.n_layers * 2


@cache_bytes.misconception("latent_only", "The rotary key k_pe is cached too: kv_lora_rank + qk_rope_head_dim "
                           "elements per token and layer.")
def _(cfg, bytes_per_element=2):
    return cfg.kv_lora_rank * cfg.n_layers * bytes_per_element


@cache_bytes.misconception("keys_and_values", "The latent stands for keys *and* values at once: it is cached once, "
                           "not twice.")
def _(cfg, bytes_per_element=2):
    return (2 * cfg.kv_lora_rank + cfg.qk_rope_head_dim) * cfg.n_layers * bytes_per_element
