"""Episode 9 — Key-Value Cache from Scratch.

When a model generates text it predicts one token, appends it, and runs again.
Without a cache each step recomputes the keys and values of the whole
sequence. But under a causal mask the keys and values of past tokens never
change, so a :class:`KVCache` keeps them: each step projects only the *new*
tokens, appends their keys and values, and lets the new queries attend to
everything cached. The outputs are exactly those of the full causal forward;
the work per generated token no longer grows with the square of the length.

The pieces: ``KVCache`` (the store), ``CachedMultiHeadAttention`` (attention
that reads and extends it), ``make_step_fn`` (what a decoding step feeds the
model, with or without a cache) and ``generate_greedy`` (the decoding loop).
``TinyLM`` is a one-layer language model to try them on.

Shapes: ``b`` batch, ``t`` new tokens, ``s`` cached + new tokens, ``h`` heads,
``d`` head width; keys and values are cached as ``(b, h, s, d)``.
"""

from typing import Callable

import torch
from torch import nn

from .ep05_self_attention import scaled_dot_product_attention
from .ep06_causal_attention import causal_mask
from .ep07_multihead_visual import merge_heads, split_heads
from .ep08_multihead_attention import MultiHeadAttention


class KVCache:
    """The keys and values of every token seen so far, for one attention layer.

    Attributes:
        k, v (torch.Tensor | None): Cached keys and values ``(b, h, s, d)``, or
            None while the cache is empty.

    Example:
        >>> cache = KVCache()
        >>> k_all, v_all = cache.update(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4))
        >>> k_all, v_all = cache.update(torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4))
        >>> k_all.shape, cache.seq_len
        (torch.Size([1, 2, 4, 4]), 4)
        >>> cache.reset(); cache.seq_len
        0
    """

    def __init__(self):
        self.k = None
        self.v = None

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Appends the keys and values of new tokens after the cached ones.

        Args:
            k (torch.Tensor): Keys of the new tokens ``(b, h, t, d)``, float.
            v (torch.Tensor): Values of the new tokens ``(b, h, t, d_v)``, same dtype.

        Returns:
            tuple[torch.Tensor, torch.Tensor]: All keys ``(b, h, s, d)`` and all
            values ``(b, h, s, d_v)`` so far, oldest first, ``s = seq_len`` after the update.
        """
        ### BEGIN SOLUTION
        if self.k is None:
            self.k, self.v = k, v
        else:
            # the sequence axis is -2 of (b, h, s, d)
            self.k = torch.cat([self.k, k], dim=-2)
            self.v = torch.cat([self.v, v], dim=-2)
        return self.k, self.v
        ### END SOLUTION

    def reset(self) -> None:
        """Empties the cache (before a new sequence)."""
        ### BEGIN SOLUTION
        self.k = self.v = None
        ### END SOLUTION

    @property
    def seq_len(self) -> int:
        """int: Number of cached tokens ``s`` (0 when empty)."""
        ### BEGIN SOLUTION
        return 0 if self.k is None else self.k.shape[-2]
        ### END SOLUTION


class CachedMultiHeadAttention(MultiHeadAttention):
    """Episode 8's multi-head attention that can decode with a :class:`KVCache`.

    Same constructor, parameters (``W_query, W_key, W_value, out_proj``) and
    outputs as :class:`MultiHeadAttention`; ``forward`` takes an optional cache.
    """

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Causal multi-head attention of the new tokens ``x`` over all tokens so far.

        Without a cache, ``x`` is the whole sequence (episode 8's forward). With
        one, ``x`` holds the tokens that follow the ``cache.seq_len`` cached ones:
        their keys and values are appended to the cache, and query ``i`` of ``x``
        (absolute position ``cache.seq_len + i``) attends to every key up to
        its own position. Feeding a sequence in pieces therefore gives the same
        outputs as feeding it at once.

        Args:
            x (torch.Tensor): New tokens ``(b, t, d_in)``, float.
            cache (KVCache, optional): This layer's cache; updated in place. Defaults to None.

        Returns:
            torch.Tensor: ``(b, t, d_out)``, same dtype as ``x``
            (float64 inputs give a float64 result; the softmax may be computed in float32).

        Example:
            >>> attn = CachedMultiHeadAttention(d_in=3, d_out=4, context_length=8, dropout=0.0, num_heads=2)
            >>> x, cache = torch.randn(1, 5, 3), KVCache()
            >>> steps = torch.cat([attn(x[:, :3], cache), attn(x[:, 3:4], cache), attn(x[:, 4:], cache)], dim=1)
            >>> torch.allclose(steps, attn(x), atol=1e-6)
            True
        """
        ### BEGIN SOLUTION
        q, k, v = (split_heads(proj(x), self.num_heads) for proj in (self.W_query, self.W_key, self.W_value))
        if cache is not None:
            k, v = cache.update(k, v)
        # t new queries against s keys: the mask aligns the last query with the last key
        _, weights = scaled_dot_product_attention(q, k, v, causal_mask(q.shape[-2], k.shape[-2]))
        return self.out_proj(merge_heads(self.dropout(weights) @ v))
        ### END SOLUTION


class TinyLM(nn.Module):
    """A one-layer language model to decode with: embedding → attention (+ residual) → logits.

    It has no positional encoding (episodes 14–16 add them); causal attention
    alone makes its predictions depend on the order of the tokens.

    Args:
        vocab_size (int): Number of token ids.
        d_model (int): Width of the embeddings and of the attention.
        context_length (int): Longest sequence.
        num_heads (int): Attention heads; divides ``d_model``.

    Attributes:
        tok_emb (nn.Embedding): ``(vocab_size, d_model)``.
        attn (CachedMultiHeadAttention): ``d_model → d_model``, no dropout.
        out_head (nn.Linear): ``d_model → vocab_size``, no bias.
    """

    def __init__(self, vocab_size: int, d_model: int, context_length: int, num_heads: int):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.attn = CachedMultiHeadAttention(d_model, d_model, context_length, 0.0, num_heads)
        self.out_head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits for the next token after each of ``ids``.

        Args:
            ids (torch.Tensor): ``(b, t)`` int64 token ids (the new tokens when a cache is given).
            cache (KVCache, optional): The attention layer's cache. Defaults to None.

        Returns:
            torch.Tensor: ``(b, t, vocab_size)`` float logits.
        """
        x = self.tok_emb(ids)
        return self.out_head(x + self.attn(x, cache))


StepFn = Callable[[torch.Tensor], torch.Tensor]


def make_step_fn(model: nn.Module, cache: KVCache | None = None) -> StepFn:
    """A decoding step for ``model``: token ids so far in, next-token logits out.

    The step is called with the *whole* sequence so far every time. Without a
    cache it runs the model on all of it. With a cache it feeds the model only
    the tokens the cache has not seen yet (``ids[:, cache.seq_len:]``): the
    whole prompt on the first call, then one new token per call.

    Args:
        model (nn.Module): Called as ``model(ids)`` or ``model(new_ids, cache)``
            and returning ``(b, t, vocab)`` logits, e.g. :class:`TinyLM`.
        cache (KVCache, optional): An empty cache that the step fills. Defaults to None.

    Returns:
        Callable: ``step(ids)`` for ``ids`` ``(b, t_total)`` int64, returning
        logits ``(b, t_fed, vocab)`` for the tokens it fed; the last row
        scores the token after ``ids``.

    Example:
        >>> model = TinyLM(vocab_size=10, d_model=4, context_length=8, num_heads=2)
        >>> ids = torch.tensor([[1, 2, 3]])
        >>> step = make_step_fn(model, KVCache())
        >>> step(ids).shape, step(torch.tensor([[1, 2, 3, 4]])).shape   # prompt, then one token
        (torch.Size([1, 3, 10]), torch.Size([1, 1, 10]))
    """
    ### BEGIN SOLUTION
    def step(ids: torch.Tensor) -> torch.Tensor:
        if cache is None:
            return model(ids)
        return model(ids[:, cache.seq_len:], cache)

    return step
    ### END SOLUTION


def generate_greedy(step_fn: StepFn, prompt_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding: appends the most likely next token ``max_new_tokens`` times.

    Each step calls ``step_fn`` with all tokens so far and appends the argmax
    of the last row of the logits it returns. The loop does not know whether
    ``step_fn`` uses a cache, and the tokens are the same either way.

    Args:
        step_fn (Callable): ``step_fn(ids)`` for ``ids`` ``(b, t_total)`` returns
            logits ``(b, t', vocab)`` whose last row scores the next token (see
            :func:`make_step_fn`).
        prompt_ids (torch.Tensor): ``(b, t)`` int64 prompt.
        max_new_tokens (int): Number of tokens to generate, ``>= 0``.

    Returns:
        torch.Tensor: ``(b, t + max_new_tokens)`` int64: the prompt followed by the new tokens.

    Example:
        >>> bigram = torch.eye(5).roll(1, dims=1)           # after token i comes i + 1
        >>> generate_greedy(lambda ids: bigram[ids], torch.tensor([[0]]), 3)
        tensor([[0, 1, 2, 3]])
    """
    ### BEGIN SOLUTION
    ids = prompt_ids
    for _ in range(max_new_tokens):
        next_id = step_fn(ids)[:, -1].argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
    return ids
    ### END SOLUTION
