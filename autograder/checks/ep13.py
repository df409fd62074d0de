"""Checks for episode 13: the MultiHeadLatentAttention layer — naive and absorbed paths, the latent cache."""

import torch

from ..probing import build, dtype_of, future_change, noncontiguous, randn
from ..registry import Episode, case
from .ep04 import SOFTMAX_IN_FLOAT32
from .ep12 import forms_per_head_tensor
from .ep16 import BF16_ONE_STEP

EPISODE = Episode("ep13", "Multi-Head Latent Attention – Code Implementation in Python",
                  video="https://youtu.be/mIaWmJVrMpc", module="ep13_mla")

mla = EPISODE.exercise("MultiHeadLatentAttention", method="forward")


def chunk_sizes(c) -> list[int]:
    """The sizes of the pieces a case feeds one after the other, e.g. ``"3+1+2"`` → ``[3, 1, 2]``."""
    return [int(n) for n in c.chunks.split("+")]


def make_mla(impl, c, gen):
    """The case's layer with seeded weights, a cache one row and two tokens larger than needed, in eval mode."""
    t = sum(chunk_sizes(c)) if "chunks" in c.params else c.t
    layer = build(impl.MultiHeadLatentAttention, c.d_model, c.h, c.d, c.rank, c.params.get("q_lora", 0),
                  max_batch_size=c.b + 1, max_seq_len=t + 2, gen=gen)
    return layer.to(dtype_of(c))


def inputs(gen, c, t):
    """``(b, t, d_model)`` inputs (scaled, non-contiguous as the case asks)."""
    x = randn(gen, c.b, t, c.d_model, dtype=dtype_of(c), scale=c.params.get("scale", 1.0))
    return noncontiguous(x) if c.params.get("noncontiguous") else x


def both_paths(layer, run):
    """``run()`` with the naive and with the absorbed path of the same layer."""
    results = {}
    for absorb in (False, True):
        layer.absorb = absorb
        results["absorbed" if absorb else "naive"] = run()
    return results


def cache_state(layer) -> str:
    """Every tensor the layer (and its submodules) keeps besides its parameters: ``"name (shape); …"``."""
    state = [f"{name} {tuple(buf.shape)}" for name, buf in layer.named_buffers()]
    for prefix, module in layer.named_modules():
        for name, value in vars(module).items():
            if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
                state.append(f"{prefix + '.' if prefix else ''}{name} {tuple(value.shape)}")
    return "; ".join(sorted(state))


# --- prefill -------------------------------------------------------------------------------------


@mla.check(case(b=2, t=5, d_model=12, h=3, d=4, rank=6), case(b=1, t=1, d_model=8, h=2, d=3, rank=5),
           case(b=3, t=4, d_model=10, h=5, d=3, rank=7, q_lora=6),
           case(b=2, t=6, d_model=9, h=3, d=5, rank=4, dtype="float64"), tolerances=SOFTMAX_IN_FLOAT32)
def forward_naive_and_absorbed(impl, c, gen):
    """forward(x) on a whole sequence, with the naive and the absorbed path (equal)"""
    layer, x = make_mla(impl, c, gen), inputs(gen, c, c.t)
    return both_paths(layer, lambda: layer(x))


@mla.check(case(b=2, t=5, d_model=12, h=3, d=4, rank=6), case(b=3, t=4, d_model=10, h=5, d=3, rank=7, q_lora=6))
def cache_holds_normalised_latent(impl, c, gen):
    """after forward(x): the layer keeps only kv_cache, whose first t rows are the normalised latents"""
    layer, x = make_mla(impl, c, gen), inputs(gen, c, c.t)

    def run():
        layer.kv_cache.zero_()
        layer(x)
        return {"state": cache_state(layer), "kv_cache": layer.kv_cache[:c.b, :c.t].clone()}
    return both_paths(layer, run)


@mla.check(case(b=2, t=6, d_model=8, h=3, d=4, rank=5, i=2), case(b=1, t=4, d_model=6, h=2, d=3, rank=5, i=0))
def no_peeking(impl, c, gen):
    """changing tokens after position i leaves the outputs up to i unchanged (both paths)"""
    layer, x = make_mla(impl, c, gen), randn(gen, c.b, c.t, c.d_model)
    return both_paths(layer, lambda: future_change(layer, [x], c.i, gen))


@mla.check(case(b=2, t=3, s=7, h=3, d=4, rank=5), tolerances=BF16_ONE_STEP)
def bfloat16_attention_weights(impl, c, gen):
    """attention_weights of bfloat16 scores: the softmax computed in float32, the weights rounded to bfloat16 once"""
    layer = build(impl.MultiHeadLatentAttention, c.h * c.d, c.h, c.d, c.rank, gen=gen)  # scale d ** -0.5 = 1/2
    scores = randn(gen, c.b, c.t, c.h, c.s, dtype=torch.bfloat16, scale=8.0)
    return layer.attention_weights(scores, torch.ones(c.t, c.s, dtype=torch.bool).triu(c.s - c.t + 1))


# --- decoding with the cache -----------------------------------------------------------------------


def decode(impl, c, gen):
    """One sequence fed whole, then piece by piece with increasing start_pos; both paths."""
    layer = make_mla(impl, c, gen)
    x = inputs(gen, c, sum(chunk_sizes(c)))

    def run():
        full = layer(x)
        pieces, start = [], 0
        for t in chunk_sizes(c):
            pieces.append(layer(x[:, start:start + t], start))
            start += t
        return {"full_forward": full, "decoded": torch.cat(pieces, dim=1)}
    return both_paths(layer, run)


@mla.check(case(b=2, d_model=12, h=3, d=4, rank=6, chunks="4+1+1+1"),
           case(b=1, d_model=8, h=2, d=3, rank=5, chunks="1+1+1"),
           case(b=3, d_model=10, h=4, d=2, rank=7, q_lora=5, chunks="2+3+1"),
           case(b=2, d_model=9, h=3, d=5, rank=4, chunks="3+2+1", dtype="float64"), tolerances=SOFTMAX_IN_FLOAT32)
def prefill_then_decode(impl, c, gen):
    """a prompt, then tokens at start_pos = 4, 5, … (or chunks): equal to the full forward at every position"""
    return decode(impl, c, gen)


@mla.check(case(b=2, d_model=12, h=3, d=4, rank=6, chunks="3+1+1"),
           case(b=1, d_model=10, h=2, d=5, rank=7, q_lora=4, chunks="2+2+1"))
def cache_after_decoding(impl, c, gen):
    """pieces fed at start_pos = 0, 3, 4, … into an empty cache: kv_cache[:b, :s] holds each latent in its own row"""
    layer, x = make_mla(impl, c, gen), inputs(gen, c, sum(chunk_sizes(c)))

    def run():
        layer.kv_cache.zero_()
        start = 0
        for t in chunk_sizes(c):
            layer(x[:, start:start + t], start)
            start += t
        return layer.kv_cache[:c.b, :start].clone()
    return both_paths(layer, run)


# Sizes where attending over the latents needs no tensor as large as the keys (b·s·h·d elements).
@mla.check(case(b=2, d_model=12, h=3, d=4, rank=6, chunks="8+1"),
           case(b=1, d_model=10, h=2, d=6, rank=5, q_lora=4, chunks="11+1"))
def absorbed_decoding_reads_only_latents(impl, c, gen):
    """absorbed decoding of one token after a prompt: right output, no per-head keys or values of cached tokens"""
    layer = make_mla(impl, c, gen)
    layer.absorb = True
    prompt, new = chunk_sizes(c)
    x = inputs(gen, c, prompt + new)
    layer(x[:, :prompt])
    existing = [x, *layer.parameters(), *layer.buffers()]
    out, formed = forms_per_head_tensor(lambda: layer(x[:, prompt:], prompt), existing,
                                        c.b * (prompt + new) * c.h * c.d)
    return {"output": out, "formed_per_head_keys_or_values": formed, "state": cache_state(layer)}


@mla.check(case(b=3, t=7, d_model=6, h=2, d=3, rank=4, noncontiguous=True),
           case(b=2, t=3, d_model=8, h=5, d=2, rank=3, q_lora=6, scale=30.0),
           case(b=1, t=5, d_model=7, h=3, d=4, rank=9, q_lora=3, dtype="float64"), hidden=True,
           tolerances=SOFTMAX_IN_FLOAT32)
def hidden_forward(impl, c, gen):
    """non-contiguous inputs; large inputs with more heads than tokens; float64 with a low-rank query"""
    layer, x = make_mla(impl, c, gen), inputs(gen, c, c.t)
    return both_paths(layer, lambda: layer(x))


@mla.check(case(b=3, d_model=7, h=2, d=5, rank=4, q_lora=3, chunks="2+1+3+1", noncontiguous=True),
           case(b=1, d_model=6, h=4, d=3, rank=5, chunks="5+2+1", dtype="float64"), hidden=True,
           tolerances=SOFTMAX_IN_FLOAT32)
def hidden_decoding(impl, c, gen):
    """uneven pieces; non-contiguous inputs; float64"""
    return decode(impl, c, gen)


@mla.check(case(b=3, d_model=9, h=4, d=3, rank=5, chunks="9+1"), hidden=True)
def hidden_absorbed_decoding(impl, c, gen):
    """other sizes: absorbed decoding forms no per-head keys or values"""
    return absorbed_decoding_reads_only_latents(impl, c, gen)


# --- misconceptions ------------------------------------------------------------------------------


def _forward(self, x, start_pos=0, query=None, cached=None, read=None, mask_fn=None, write_at=None, read_all=False):
    """MultiHeadLatentAttention.forward with one part swapped for a buggy one (for the variants below).

    ``query(x)`` gives the flat queries, ``cached(x)`` what is written to the cache (at ``write_at``),
    ``read(rows)`` turns the cache rows into the latents attended to, ``mask_fn(t, s)`` the mask. The rows
    read end after the written ones, or at ``start_pos + t`` with ``read_all``.
    """
    from solutions.ep06_causal_attention import causal_mask

    bsz, seqlen, _ = x.shape
    if query is None:
        query = self.wq if self.q_lora_rank == 0 else (lambda y: self.wq_b(self.q_norm(self.wq_a(y))))
    q = query(x).unflatten(-1, (self.n_heads, self.head_dim))
    at = start_pos if write_at is None else write_at
    self.kv_cache[:bsz, at:at + seqlen] = (cached or (lambda y: self.kv_norm(self.wkv_a(y))))(x)
    latent = (read or (lambda rows: rows))(self.kv_cache[:bsz, :(start_pos if read_all else at) + seqlen])
    mask = (mask_fn or causal_mask)(seqlen, latent.shape[1])
    attend = self.attend_absorbed if self.absorb else self.attend_naive
    return self.wo(attend(q, latent, mask).flatten(2))


@mla.misconception("latent_not_normalised", "The latent goes through kv_norm before it is cached and expanded: "
                   "cache self.kv_norm(self.wkv_a(x)).")
def _(self, x, start_pos=0):
    return _forward(self, x, start_pos, cached=self.wkv_a)


@mla.misconception("cache_not_normalised", "Your outputs are right but the cache holds the raw latent wkv_a(x) and "
                   "you normalise it on every read. Cache the *normalised* latent, kv_norm(wkv_a(x)), as DeepSeek "
                   "does: each token is normalised once.")
def _(self, x, start_pos=0):
    return _forward(self, x, start_pos, cached=self.wkv_a, read=self.kv_norm)


@mla.misconception("mask_not_aligned", "With cached tokens the t new queries are the *last* t of s positions: "
                   "query i sees keys up to start_pos + i. Build the mask with causal_mask(t, s), not as if the "
                   "queries started at position 0.")
def _(self, x, start_pos=0):
    return _forward(self, x, start_pos, mask_fn=lambda t, s: torch.ones(t, s, dtype=torch.bool).triu(1))


@mla.misconception("ignores_start_pos", "Write the new latents at kv_cache[:b, start_pos:start_pos + t] and attend "
                   "over kv_cache[:b, :start_pos + t]; yours always writes at position 0, so decoding forgets the "
                   "prompt.")
def _(self, x, start_pos=0):
    return _forward(self, x, start_pos, write_at=0)


@mla.misconception("cache_written_at_row_0", "The new tokens' latents belong in rows start_pos … start_pos + t - 1: "
                   "kv_cache[:b, start_pos:start_pos + t] = …. Writing them at [:b, :t] overwrites the first cached "
                   "tokens, and the rows you then attend over hold stale latents.")
def _(self, x, start_pos=0):
    return _forward(self, x, start_pos, write_at=0, read_all=True)


@mla.misconception("wkv_b_split_keys_then_values", "wkv_b's rows are grouped head by head, [W^UK_j; W^UV_j] for "
                   "each head j: view the weight as (h, 2d, c) and split the middle axis. Taking the first h·d rows "
                   "as all the keys and the rest as all the values reads the wrong rows.", method="split_wkv_b")
def _(self):
    return self.wkv_b.weight.split(self.n_heads * self.head_dim, dim=0)


def _weights(self, scores, mask, scale=None, masked=True, in_bfloat16=False):
    """MultiHeadLatentAttention.attention_weights with one step changed (for the variants below)."""
    from solutions.ep02_building_blocks import softmax

    scores = scores * (self.softmax_scale if scale is None else scale)
    if masked:
        scores = scores.masked_fill(mask.unsqueeze(1), float("-inf"))
    if in_bfloat16:  # episode 2's softmax computes in the dtype of its input
        return softmax(scores, dim=-1)
    return scores.softmax(dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(scores.dtype)


@mla.misconception("absorbed_scale_by_latent_width", "Absorption changes where the dot products are taken, not "
                   "their values: the scale stays head_dim ** -0.5, not kv_lora_rank ** -0.5.",
                   method="attention_weights")
def _(self, scores, mask):
    return _weights(self, scores, mask, scale=self.kv_lora_rank ** -0.5 if self.absorb else None)


@mla.misconception("no_scale", "Scale the scores by self.softmax_scale = head_dim ** -0.5 before the softmax.",
                   method="attention_weights")
def _(self, scores, mask):
    return _weights(self, scores, mask, scale=1.0)


@mla.misconception("mask_ignored", "Apply the causal mask: scores.masked_fill(mask.unsqueeze(1), float('-inf')) "
                   "(the same (t, s) mask for every head) before the softmax.", method="attention_weights")
def _(self, scores, mask):
    return _weights(self, scores, mask, masked=False)


@mla.misconception("softmax_in_bfloat16", "Compute the softmax in float32 and cast the weights back once "
                   "(scores.softmax(dim=-1, dtype=torch.float32).to(scores.dtype)): exponentials and sums in bfloat16 "
                   "round at every step.", method="attention_weights")
def _(self, scores, mask):
    return _weights(self, scores, mask, in_bfloat16=True)


@mla.misconception("absorbed_path_expands", "Your absorbed path gives the right output but forms the per-head keys "
                   "or values of every cached token. Use episode 12's absorbed_scores and absorbed_context, which "
                   "work on the latents directly.", method="attend_absorbed")
def _(self, q, latent, mask):
    return self.attend_naive(q, latent, mask)


@mla.misconception("no_q_norm", "With q_lora_rank > 0 the query is wq_b(q_norm(wq_a(x))): normalise the "
                   "compressed query before wq_b.")
def _(self, x, start_pos=0):
    return _forward(self, x, start_pos, query=self.wq if self.q_lora_rank == 0 else (lambda y: self.wq_b(self.wq_a(y))))
