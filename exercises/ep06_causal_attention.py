"""Episode 6 — Causal Attention: don't peek into the future.

A causal mask blocks every key that comes after the query, so the output at
position ``i`` depends only on tokens ``0..i``. With a cache (episode 9) there
are more keys than queries; the mask then aligns the *last* query with the last
key.

Shapes: ``b`` batch, ``t`` query length, ``s`` key length, ``d`` width.
"""

import math

import torch
from torch import nn

from .ep05_self_attention import scaled_dot_product_attention


def causal_mask(t: int, s: int | None = None) -> torch.Tensor:
    """Boolean mask of the future: ``True`` where query ``i`` may not see key ``j``.

    Query ``i`` sits at absolute position ``i + (s - t)`` (the queries are the
    last ``t`` of ``s`` tokens), so key ``j`` is blocked when ``j > i + s - t``.

    Args:
        t (int): Number of queries.
        s (int, optional): Number of keys, ``s >= t``. Defaults to ``t``.

    Returns:
        torch.Tensor: ``(t, s)`` bool; ``True`` strictly above the (shifted) diagonal.

    Example:
        >>> causal_mask(3)
        tensor([[False,  True,  True],
                [False, False,  True],
                [False, False, False]])
        >>> causal_mask(1, 3)           # one new token sees all three
        tensor([[False, False, False]])
    """
    raise NotImplementedError("ep06.causal_mask")


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention under the causal mask.

    Args:
        q (torch.Tensor): Queries ``(..., t, d_k)``, float; the last ``t`` positions.
        k (torch.Tensor): Keys ``(..., s, d_k)`` with ``s >= t``.
        v (torch.Tensor): Values ``(..., s, d_v)``.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: ``out`` ``(..., t, d_v)`` and
        ``weights`` ``(..., t, s)`` (zero on the future), dtype of ``q``
        (float64 inputs give a float64 result; the softmax may be computed in float32).

    Example:
        >>> q = k = v = torch.randn(1, 3, 4)
        >>> out, w = causal_attention(q, k, v)
        >>> w[0, 0]                      # the first token sees only itself
        tensor([1., 0., 0.])
    """
    raise NotImplementedError("ep06.causal_attention")


class CausalAttention(nn.Module):
    """Single-head causal self-attention with dropout on the attention weights.

    Args:
        d_in (int): Input width.
        d_out (int): Width of queries, keys, values and output.
        context_length (int): Longest sequence; size of the ``mask`` buffer.
        dropout (float): Probability of zeroing an attention weight in training.
        qkv_bias (bool): Whether the projections have a bias. Defaults to False.

    Attributes:
        W_query, W_key, W_value (nn.Linear): ``d_in → d_out`` projections.
        dropout (nn.Dropout): Applied to the attention weights after the softmax.
        mask (torch.Tensor): ``(context_length, context_length)`` bool, True above the diagonal.
    """

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, qkv_bias: bool = False):
        super().__init__()
        self.d_out = d_out
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        mask = torch.ones(context_length, context_length, dtype=torch.bool).triu(diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Causal self-attention over ``x``.

        Args:
            x (torch.Tensor): Inputs ``(b, t, d_in)``, float, ``t <= context_length``.

        Returns:
            torch.Tensor: ``(b, t, d_out)``, same dtype
            (float64 inputs give a float64 result; the softmax may be computed in float32).
            Output ``i`` depends only on ``x[:, :i+1]``. Scores are scaled by
            ``1/√d_out``; in training mode ``self.dropout`` is applied to the
            weights (after the softmax).

        Example:
            >>> ca = CausalAttention(d_in=3, d_out=2, context_length=8, dropout=0.0)
            >>> ca(torch.randn(2, 5, 3)).shape
            torch.Size([2, 5, 2])
        """
        raise NotImplementedError("ep06.CausalAttention")
