"""Checks for episode 9: the KV cache, cached attention, decoding steps and greedy generation."""

import torch

from ..probing import build, dtype_of, noncontiguous, randint, randn
from ..registry import Episode, case
from .ep04 import SOFTMAX_IN_FLOAT32
from .ep07 import inputs
from .ep08 import attend_heads

EPISODE = Episode("ep09", "Key-Value Cache from Scratch", video="https://youtu.be/IDwTiS4_bKo", module="ep09_kv_cache")


def chunk_sizes(c) -> list[int]:
    """The sizes of the pieces a case feeds one after the other, e.g. ``"3+1+2"`` → ``[3, 1, 2]``."""
    return [int(n) for n in c.chunks.split("+")]


# --- KVCache ----------------------------------------------------------------------------------

kv = EPISODE.exercise("KVCache", method="update")


def new_kv(gen, c, t):
    """Keys ``(b, h, t, d)`` and values ``(b, h, t, d_v)`` of ``t`` new tokens."""
    dtype = dtype_of(c)
    k, v = randn(gen, c.b, c.h, t, c.d, dtype=dtype), randn(gen, c.b, c.h, t, c.d_v, dtype=dtype)
    return (noncontiguous(k), noncontiguous(v)) if c.params.get("noncontiguous") else (k, v)


@kv.check(case(b=2, h=3, d=4, d_v=5, chunks="4+1+2"), case(b=1, h=2, d=3, d_v=3, chunks="1+1+1"),
          case(b=3, h=4, d=2, d_v=6, chunks="2+3", dtype="float64"))
def update_in_chunks(impl, c, gen):
    """after each update: all keys and values so far, oldest first, and seq_len"""
    cache = impl.KVCache()
    steps = [{"seq_len": cache.seq_len}]
    for t in chunk_sizes(c):
        k_all, v_all = cache.update(*new_kv(gen, c, t))
        steps.append({"k_all": k_all.clone(), "v_all": v_all.clone(), "seq_len": cache.seq_len})
    return steps


@kv.check(case(b=2, h=3, d=4, d_v=2, chunks="3+2"))
def reset_and_reuse(impl, c, gen):
    """reset() empties the cache: seq_len 0, and the next update starts a new sequence"""
    cache = impl.KVCache()
    for t in chunk_sizes(c):
        cache.update(*new_kv(gen, c, t))
    cache.reset()
    empty = cache.seq_len
    k_all, v_all = cache.update(*new_kv(gen, c, 1))
    return {"seq_len_after_reset": empty, "k_all": k_all, "v_all": v_all, "seq_len": cache.seq_len}


@kv.check(case(b=3, h=2, d=5, d_v=4, chunks="5+1+1", noncontiguous=True),
          case(b=1, h=5, d=3, d_v=3, chunks="2+6+1"), hidden=True)
def hidden_updates(impl, c, gen):
    """non-contiguous keys and values; more heads than tokens"""
    return update_in_chunks(impl, c, gen)


def _update(self, k, v, dim=-2, new_first=False):
    """KVCache.update concatenating along ``dim``, the new tokens first if asked (for the variants below)."""
    if self.k is None:
        self.k, self.v = k, v
    else:
        self.k, self.v = ((torch.cat([new, old] if new_first else [old, new], dim=dim))
                          for old, new in ((self.k, k), (self.v, v)))
    return self.k, self.v


@kv.misconception("concatenated_on_heads", "The keys are (b, h, s, d): append new tokens along the sequence "
                  "axis, torch.cat([self.k, k], dim=-2) (or dim=2), not the head axis.")
def _(self, k, v):
    return _update(self, k, v, dim=1)


@kv.misconception("new_tokens_first", "Append the new keys and values *after* the cached ones, "
                  "torch.cat([self.k, k], dim=-2): the cache is oldest first, so that row j is position j.")
def _(self, k, v):
    return _update(self, k, v, new_first=True)


@kv.misconception("overwrites", "update replaced the cached keys and values with the new ones. The cache must "
                  "keep every token seen so far: concatenate the new keys after the cached ones.")
def _(self, k, v):
    self.k, self.v = k, v
    return k, v


@kv.misconception("reset_keeps_entries", "reset() must empty the cache (self.k = self.v = None), so that "
                  "seq_len is 0 and the next update starts a new sequence.", method="reset")
def _(self):
    pass


@kv.misconception("seq_len_reads_heads_axis", "seq_len read the wrong axis of the (b, h, s, d) keys. The number "
                  "of cached tokens is self.k.shape[-2] (0 when empty).", method="seq_len")
@property
def _(self):
    return 0 if self.k is None else self.k.shape[1]


# --- CachedMultiHeadAttention -----------------------------------------------------------------

cached = EPISODE.exercise("CachedMultiHeadAttention", method="forward")


def make_attention(impl, c, gen):
    return build(impl.CachedMultiHeadAttention, c.d_in, c.h * c.d, c.ctx, 0.2, c.h, gen=gen).to(dtype_of(c))


def sequence(gen, c):
    """A random ``(b, t, d_in)`` input as long as the case's pieces together."""
    return inputs(gen, c, c.b, sum(chunk_sizes(c)), c.d_in)


def decode(impl, c, gen):
    """Feeds one random sequence to a fresh cache in pieces; returns the full and the pieced outputs."""
    attn, x = make_attention(impl, c, gen), sequence(gen, c)
    cache, outs, start = impl.KVCache(), [], 0
    for t in chunk_sizes(c):
        outs.append(attn(x[:, start:start + t], cache))
        start += t
    return {"full_forward": attn(x), "decoded": torch.cat(outs, dim=1)}


@cached.check(case(b=2, d_in=5, h=3, d=2, ctx=8, chunks="6"), case(b=1, d_in=4, h=2, d=3, ctx=4, chunks="1"))
def without_cache(impl, c, gen):
    """forward(x) without a cache is causal multi-head attention (fed at once)"""
    return make_attention(impl, c, gen)(sequence(gen, c))


@cached.check(case(b=2, d_in=5, h=3, d=4, ctx=8, chunks="1+1+1+1+1"),
              case(b=3, d_in=4, h=2, d=3, ctx=10, chunks="4+1+2+1"),
              case(b=2, d_in=3, h=4, d=2, ctx=6, chunks="2+1+3", dtype="float64"), tolerances=SOFTMAX_IN_FLOAT32)
def decode_with_cache(impl, c, gen):
    """decoding piece by piece with a KVCache equals the full causal forward at every step"""
    return decode(impl, c, gen)


@cached.check(case(b=3, d_in=6, h=2, d=5, ctx=9, chunks="3+1+1+2", noncontiguous=True),
              case(b=1, d_in=7, h=5, d=2, ctx=12, chunks="1+4+1+1+3", dtype="float64"), hidden=True,
              tolerances=SOFTMAX_IN_FLOAT32)
def hidden_decoding(impl, c, gen):
    """non-contiguous inputs; uneven pieces"""
    return decode(impl, c, gen)


def _cached_forward(self, x, cache, mask_of=lambda self, t, s, cache: None, attend_to_cache=True):
    """CachedMultiHeadAttention.forward with a given mask rule (for the variants below)."""
    from solutions.ep07_multihead_visual import split_heads

    q, k, v = (split_heads(proj(x), self.num_heads) for proj in (self.W_query, self.W_key, self.W_value))
    if cache is not None:
        k_all, v_all = cache.update(k, v)
        if attend_to_cache:
            k, v = k_all, v_all
    return attend_heads(self, q, k, v, mask=mask_of(self, q.shape[-2], k.shape[-2], cache))


@cached.misconception("mask_not_aligned", "With a cache the t new queries are the *last* t of s positions: "
                      "query i may see keys up to i + s - t. Use causal_mask(t, s) (or self.mask[s-t:s, :s]), "
                      "not self.mask[:t, :s].")
def _(self, x, cache=None):
    return _cached_forward(self, x, cache, lambda self, t, s, cache: self.mask[:t, :s])


@cached.misconception("no_mask_with_cache", "A chunk of several new tokens (the prompt, or a cache that is not "
                      "empty) still needs the causal mask: query i must not see the new tokens after it. Mask "
                      "with causal_mask(t, s) whether or not a cache is given.")
def _(self, x, cache=None):
    return _cached_forward(self, x, cache, lambda self, t, s, cache: None if cache is None else
                           torch.zeros(t, s, dtype=torch.bool))


@cached.misconception("ignores_cached_keys", "The new queries attended only to the new tokens' keys. Use what "
                      "cache.update returns, the keys and values of *all* tokens so far: "
                      "k, v = cache.update(k, v).")
def _(self, x, cache=None):
    return _cached_forward(self, x, cache, attend_to_cache=False)


# --- make_step_fn -----------------------------------------------------------------------------

step = EPISODE.exercise("make_step_fn")


def step_logits(impl, c, gen):
    """Runs the uncached and the cached step on a growing sequence; returns each step's last logits."""
    model = build(impl.TinyLM, c.vocab, c.h * c.d, c.ctx, c.h, gen=gen)
    lengths = [int(n) for n in c.lengths.split("+")]
    ids = randint(gen, c.vocab, c.b, lengths[-1])
    plain, with_cache = impl.make_step_fn(model), impl.make_step_fn(model, impl.KVCache())
    return {name: torch.stack([fn(ids[:, :n])[:, -1] for n in lengths], dim=1)
            for name, fn in (("without_cache", plain), ("with_cache", with_cache))}


@step.check(case(b=2, vocab=11, h=3, d=2, ctx=8, lengths="3+4+5+6"),
            case(b=1, vocab=7, h=2, d=4, ctx=6, lengths="1+2+3+4"),
            case(b=3, vocab=9, h=2, d=3, ctx=8, lengths="2+3+5+6"))
def next_token_logits(impl, c, gen):
    """the last logits of each step on a growing sequence, without and with a cache (the same)"""
    return step_logits(impl, c, gen)


@step.check(case(b=2, vocab=13, h=4, d=2, ctx=12, lengths="5+6+7+9+10"),
            case(b=4, vocab=6, h=1, d=5, ctx=5, lengths="1+2+3+4+5"), hidden=True)
def hidden_steps(impl, c, gen):
    """longer sequences, two new tokens in one step"""
    return step_logits(impl, c, gen)


@step.misconception("feeds_everything_to_cache", "With a cache, feed the model only the tokens it has not seen, "
                    "ids[:, cache.seq_len:]; feeding all ids again appends their keys a second time.")
def _(model, cache=None):
    return lambda ids: model(ids) if cache is None else model(ids, cache)


@step.misconception("feeds_only_last_token", "Feeding only ids[:, -1:] skips the prompt on the first call: the "
                    "cache must see every token once. Feed ids[:, cache.seq_len:], the tokens not cached yet.")
def _(model, cache=None):
    return lambda ids: model(ids) if cache is None else model(ids[:, -1:], cache)


# --- generate_greedy --------------------------------------------------------------------------

greedy = EPISODE.exercise("generate_greedy")


def prefix_sum_lm(table):
    """A stand-in model: after token i, the logits are the sum of the table rows of tokens 0..i."""
    return lambda ids: table[ids].cumsum(dim=1)


def cached_prefix_sum_lm(table):
    """The same model with a cache: it keeps the running sum and reads only the tokens it has not seen."""
    state = {"seen": 0, "sum": 0}

    def step_fn(ids):
        logits = table[ids[:, state["seen"]:]].cumsum(dim=1) + state["sum"]
        state["seen"], state["sum"] = ids.shape[1], logits[:, -1:]
        return logits

    return step_fn


def generate(impl, c, gen):
    table = randn(gen, c.vocab, c.vocab, dtype=torch.float64)
    prompt = randint(gen, c.vocab, c.b, c.t)
    lm = cached_prefix_sum_lm if c.params.get("cached") else prefix_sum_lm
    return impl.generate_greedy(lm(table), prompt, c.new)


@greedy.check(case(b=2, t=3, vocab=7, new=5), case(b=1, t=1, vocab=5, new=4), case(b=3, t=4, vocab=11, new=1))
def greedy_tokens(impl, c, gen):
    """prompt followed by the argmax next tokens, with a step function that sees the whole sequence"""
    return generate(impl, c, gen)


@greedy.check(case(b=2, t=2, vocab=9, new=6, cached=True), case(b=1, t=5, vocab=6, new=3, cached=True))
def with_cached_step(impl, c, gen):
    """a step function with a cache gives the same tokens"""
    return generate(impl, c, gen)


@greedy.check(case(b=4, t=2, vocab=13, new=7), case(b=2, t=3, vocab=8, new=0),
              case(b=3, t=1, vocab=10, new=5, cached=True), hidden=True)
def hidden_generation(impl, c, gen):
    """more tokens; zero new tokens; a cached step"""
    return generate(impl, c, gen)


def _greedy(step_fn, prompt_ids, max_new_tokens, position=-1, fed=lambda ids: ids):
    ids = prompt_ids
    for _ in range(max_new_tokens):
        next_id = step_fn(fed(ids))[:, position].argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
    return ids


@greedy.misconception("first_position_logits", "The next token is scored by the *last* row of the logits: "
                      "logits[:, -1].argmax(dim=-1), not logits[:, 0].")
def _(step_fn, prompt_ids, max_new_tokens):
    return _greedy(step_fn, prompt_ids, max_new_tokens, position=0)


@greedy.misconception("feeds_last_token_only", "Call step_fn with all tokens so far (prompt + generated); "
                      "whether the model may skip the cached ones is the step function's business.")
def _(step_fn, prompt_ids, max_new_tokens):
    return _greedy(step_fn, prompt_ids, max_new_tokens, fed=lambda ids: ids[:, -1:])


@greedy.misconception("new_tokens_only", "Return the prompt followed by the new tokens, shape "
                      "(b, t + max_new_tokens), not the new tokens alone.")
def _(step_fn, prompt_ids, max_new_tokens):
    return _greedy(step_fn, prompt_ids, max_new_tokens)[:, prompt_ids.shape[1]:]
