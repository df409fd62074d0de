"""Episode 5 — Self Attention Mechanism, Handwritten from Scratch.

Scaled dot-product attention, ``softmax(q kᵀ / √d_k) v``, and a self-attention
layer with trainable query, key and value projections.

Shapes: ``b`` batch, ``t`` query length, ``s`` key length, ``d_k`` query/key
width, ``d_v`` value width; any leading dims (batch, heads) broadcast.
"""

import math

import torch
from torch import nn


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention.

    ``weights = softmax(q kᵀ / √d_k)`` over the keys, with blocked positions set
    to ``-inf`` *before* the softmax, and ``out = weights v``.

    Args:
        q (torch.Tensor): Queries ``(..., t, d_k)``, float.
        k (torch.Tensor): Keys ``(..., s, d_k)``, same dtype.
        v (torch.Tensor): Values ``(..., s, d_v)``, same dtype.
        mask (torch.Tensor, optional): Boolean, broadcastable to ``(..., t, s)``;
            ``True`` means "query i may not attend to key j". Defaults to None.

    Returns:
        tuple[torch.Tensor, torch.Tensor]: ``out`` ``(..., t, d_v)`` and
        ``weights`` ``(..., t, s)``, both in the dtype of ``q``; each row of
        ``weights`` sums to 1. float64 inputs give a float64 result; the softmax
        may be computed in float32.

    Example:
        >>> q = k = torch.eye(2).unsqueeze(0)           # (1, 2, 2)
        >>> v = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
        >>> out, w = scaled_dot_product_attention(q, k, v)
        >>> w.round(decimals=4)
        tensor([[[0.6698, 0.3302],
                 [0.3302, 0.6698]]])
    """
    raise NotImplementedError("ep05.scaled_dot_product_attention")


class SelfAttention(nn.Module):
    """Self-attention with trainable projections (Raschka's ``SelfAttention_v2``).

    Args:
        d_in (int): Input width.
        d_out (int): Width of queries, keys, values and the output.
        qkv_bias (bool): Whether the three projections have a bias. Defaults to False.

    Attributes:
        W_query, W_key, W_value (nn.Linear): ``d_in → d_out`` projections.
    """

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attends every token to every token (no mask).

        Args:
            x (torch.Tensor): Inputs ``(b, t, d_in)``, float.

        Returns:
            torch.Tensor: Context vectors ``(b, t, d_out)``, same dtype
            (float64 inputs give a float64 result; the softmax may be computed in float32).
            The scores are scaled by ``1/√d_out`` (the key width).

        Example:
            >>> attn = SelfAttention(d_in=3, d_out=2)
            >>> attn(torch.randn(1, 4, 3)).shape
            torch.Size([1, 4, 2])
        """
        raise NotImplementedError("ep05.SelfAttention")
