"""Episode 10 — Multi-Query Attention.

During decoding, multi-head attention caches a key and a value *per head* for
every token and every layer, and reading that cache dominates the time per
token. Multi-query attention (Shazeer, 2019) keeps ``h`` query heads but only
one key head and one value head, shared by all of them: the cache shrinks by
a factor ``h``, at some cost in quality.

Shapes: ``b`` batch, ``t`` sequence, ``h`` query heads, ``d`` head width,
``d_out = h · d``; the shared key and value are ``(b, 1, t, d)``.
"""

import torch
from torch import nn

from .ep05_self_attention import scaled_dot_product_attention
from .ep07_multihead_visual import merge_heads, split_heads
from .ep08_multihead_attention import MultiHeadAttention


class MultiQueryAttention(MultiHeadAttention):
    """Causal attention with ``num_heads`` query heads and one shared key/value head.

    Args:
        d_in (int): Input width.
        d_out (int): Width of all query heads together (and of the output); divisible by ``num_heads``.
        num_heads (int): Number of query heads ``h``.
        context_length (int): Longest sequence; size of the ``mask`` buffer.
        dropout (float): Probability of zeroing an attention weight in training. Defaults to 0.
        qkv_bias (bool): Whether the query/key/value projections have a bias. Defaults to False.

    Attributes:
        W_query (nn.Linear): ``d_in → d_out``, the ``h`` query heads.
        W_key, W_value (nn.Linear): ``d_in → head_dim``, the one shared key and value head.
        out_proj (nn.Linear): ``d_out → d_out`` with bias.
        dropout, mask, num_heads, head_dim: As in :class:`MultiHeadAttention`.
    """

    def __init__(self, d_in: int, d_out: int, num_heads: int, context_length: int, dropout: float = 0.0,
                 qkv_bias: bool = False):
        super().__init__(d_in, d_out, context_length, dropout, num_heads, qkv_bias)
        self.W_key = nn.Linear(d_in, self.head_dim, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, self.head_dim, bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Causal multi-query attention over ``x``.

        Every query head attends to the same keys and values, with scores
        scaled by ``1/√head_dim`` and dropout on the weights; the heads are
        merged (head 0 first) and passed through ``out_proj``.

        Args:
            x (torch.Tensor): ``(b, t, d_in)``, float, ``t <= context_length``.

        Returns:
            torch.Tensor: ``(b, t, d_out)``, same dtype
            (float64 inputs give a float64 result; the softmax may be computed in float32).
            Output ``i`` depends only on ``x[:, :i+1]``.

        Example:
            >>> mqa = MultiQueryAttention(d_in=3, d_out=8, num_heads=4, context_length=6)
            >>> mqa.W_key.weight.shape                # one key head of width 2
            torch.Size([2, 3])
            >>> mqa(torch.randn(2, 6, 3)).shape
            torch.Size([2, 6, 8])
        """
        raise NotImplementedError("ep10.MultiQueryAttention")


def kv_cache_elements_per_token(mechanism: str, n_layers: int, n_heads: int, head_dim: int) -> int:
    """Number of cached key and value elements per token, over all layers.

    Multi-head attention caches a key and a value for each of ``n_h`` heads in
    each of ``l`` layers: ``2 · n_h · d_h · l``. Multi-query attention caches one
    shared key and value head per layer: ``2 · d_h · l`` (DeepSeek-V2, Table 1).

    Args:
        mechanism (str): ``"mha"`` or ``"mqa"``.
        n_layers (int): Layers ``l``.
        n_heads (int): Attention (query) heads ``n_h``.
        head_dim (int): Head width ``d_h``.

    Returns:
        int: Elements per token; multiply by the bytes per element and the
        number of tokens for the cache size.

    Raises:
        ValueError: For any other ``mechanism``.

    Example:
        >>> kv_cache_elements_per_token("mha", n_layers=2, n_heads=4, head_dim=8)
        128
        >>> kv_cache_elements_per_token("mqa", n_layers=2, n_heads=4, head_dim=8)
        32
    """
    raise NotImplementedError("ep10.kv_cache_elements_per_token")
