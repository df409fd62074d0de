"""Episode 7 — Multi-Head Attention, Visually Explained.

Several attention heads look at the same tokens, each through its own
projections, and their outputs are placed side by side. Two pictures of the
same idea:

* the *wrapper*: a list of independent single-head ``CausalAttention`` layers
  (episode 6) whose outputs are concatenated along the feature axis;
* the *split*: one wide projection of width ``d_model = h · d`` cut into ``h``
  slices of ``d`` features, head ``i`` owning features ``i·d … (i+1)·d − 1``.
  ``split_heads`` moves those slices onto their own axis, ``(b, h, t, d)``, so
  all heads can attend in one batched matrix product; ``merge_heads`` puts
  them back side by side.

Shapes: ``b`` batch, ``t`` sequence, ``h`` heads, ``d`` head width,
``d_model = h · d``. Multi-head internals use the course's ``(b, h, t, d)`` layout.
"""

import torch
from torch import nn

from .ep06_causal_attention import CausalAttention


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Cuts the feature axis into ``n_heads`` heads and moves heads before tokens.

    Head ``i`` gets the contiguous features ``i·d … (i+1)·d − 1`` of every token.

    Args:
        x (torch.Tensor): ``(b, t, d_model)``, any dtype; ``d_model`` divisible by ``n_heads``.
        n_heads (int): Number of heads ``h``.

    Returns:
        torch.Tensor: ``(b, h, t, d)`` with ``d = d_model // h``, same dtype, and
        ``out[:, i, :, j] == x[:, :, i·d + j]``.

    Example:
        >>> x = torch.arange(8.0).view(1, 2, 4)     # 2 tokens, d_model 4
        >>> split_heads(x, 2)                        # head 0: features 0-1, head 1: 2-3
        tensor([[[[0., 1.],
                  [4., 5.]],
        <BLANKLINE>
                 [[2., 3.],
                  [6., 7.]]]])
    """
    raise NotImplementedError("ep07.split_heads")


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`split_heads`: puts the heads back side by side.

    Args:
        x (torch.Tensor): ``(b, h, t, d)``, any dtype.

    Returns:
        torch.Tensor: ``(b, t, h · d)``, same dtype, with
        ``out[:, :, i·d + j] == x[:, i, :, j]``.

    Example:
        >>> x = torch.randn(2, 3, 5, 4)
        >>> torch.equal(split_heads(merge_heads(x), 3), x)
        True
    """
    raise NotImplementedError("ep07.merge_heads")


class MultiHeadAttentionWrapper(nn.Module):
    """Multi-head causal attention as a list of independent heads (Raschka's wrapper).

    Each head is a full single-head :class:`CausalAttention` of width ``d_out``,
    so the concatenated output is ``num_heads · d_out`` wide.

    Args:
        d_in (int): Input width.
        d_out (int): Width of *each* head.
        context_length (int): Longest sequence.
        dropout (float): Dropout probability on each head's attention weights.
        num_heads (int): Number of heads.
        qkv_bias (bool): Whether the projections have a bias. Defaults to False.

    Attributes:
        heads (nn.ModuleList): ``num_heads`` :class:`CausalAttention` layers.
    """

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False):
        super().__init__()
        self.heads = nn.ModuleList(
            [CausalAttention(d_in, d_out, context_length, dropout, qkv_bias) for _ in range(num_heads)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Runs every head on ``x`` and concatenates their outputs, head 0 first.

        Args:
            x (torch.Tensor): ``(b, t, d_in)``, float, ``t <= context_length``.

        Returns:
            torch.Tensor: ``(b, t, num_heads · d_out)``, same dtype; features
            ``i·d_out … (i+1)·d_out − 1`` are head ``i``'s output
            (float64 inputs give a float64 result; the softmax may be computed in float32).

        Example:
            >>> mha = MultiHeadAttentionWrapper(d_in=3, d_out=2, context_length=6, dropout=0.0, num_heads=2)
            >>> mha(torch.randn(1, 6, 3)).shape
            torch.Size([1, 6, 4])
        """
        raise NotImplementedError("ep07.MultiHeadAttentionWrapper")
