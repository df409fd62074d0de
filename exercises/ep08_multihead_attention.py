"""Episode 8 — Multi-Head Attention, Handwritten from Scratch.

The efficient form of episode 7's wrapper: one wide projection each for
queries, keys and values, split into heads, one batched causal attention over
all heads at once, heads merged back, and an output projection ``out_proj``
that mixes what the heads found. With ``out_proj`` the identity and the head
projections stacked, it computes exactly what the wrapper computes.

Shapes: ``b`` batch, ``t`` sequence, ``h`` heads, ``d = d_out / h`` head width;
internals ``(b, h, t, d)``.
"""

import torch
from torch import nn

from .ep05_self_attention import scaled_dot_product_attention
from .ep07_multihead_visual import merge_heads, split_heads


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention, batched over heads (Raschka's ``MultiHeadAttention``).

    Args:
        d_in (int): Input width.
        d_out (int): Total width of all heads (and of the output); divisible by ``num_heads``.
        context_length (int): Longest sequence; size of the ``mask`` buffer.
        dropout (float): Probability of zeroing an attention weight in training.
        num_heads (int): Number of heads ``h``.
        qkv_bias (bool): Whether the query/key/value projections have a bias. Defaults to False.

    Attributes:
        W_query, W_key, W_value (nn.Linear): ``d_in → d_out`` projections; head ``i``
            owns output features ``i·d … (i+1)·d − 1``.
        out_proj (nn.Linear): ``d_out → d_out`` with bias, applied after the heads are merged.
        dropout (nn.Dropout): On the attention weights.
        mask (torch.Tensor): ``(context_length, context_length)`` bool, True above the diagonal.
        num_heads (int), head_dim (int): ``h`` and ``d = d_out // h``.
    """

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False):
        super().__init__()
        if d_out % num_heads:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        mask = torch.ones(context_length, context_length, dtype=torch.bool).triu(diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Causal multi-head attention over ``x``.

        Each head attends with scores scaled by ``1/√head_dim``; ``self.dropout``
        acts on the attention weights (after the softmax); the heads' outputs
        are merged (head 0's features first) and passed through ``out_proj``.

        Args:
            x (torch.Tensor): ``(b, t, d_in)``, float, ``t <= context_length``.

        Returns:
            torch.Tensor: ``(b, t, d_out)``, same dtype
            (float64 inputs give a float64 result; the softmax may be computed in float32).
            Output ``i`` depends only on ``x[:, :i+1]``.

        Example:
            >>> mha = MultiHeadAttention(d_in=3, d_out=4, context_length=6, dropout=0.0, num_heads=2)
            >>> mha(torch.randn(2, 6, 3)).shape
            torch.Size([2, 6, 4])
        """
        raise NotImplementedError("ep08.MultiHeadAttention")
