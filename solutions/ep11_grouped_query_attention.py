"""Episode 11 — Grouped Query Attention (GQA).

GQA (Ainslie et al., 2023) sits between multi-head and multi-query attention:
the ``h`` query heads are split into ``g`` groups of ``h / g`` consecutive
heads, and each group shares one key and one value head. ``g = h`` is
multi-head attention, ``g = 1`` multi-query attention; the cache holds
``2 · g · d_h`` elements per token and layer.

Query head ``i`` uses key/value head ``i // (h / g)``: ``repeat_kv`` repeats
each key/value head ``h / g`` times *in place* (``repeat_interleave``) so that
the ``(b, g, t, d)`` keys line up with the ``(b, h, t, d)`` queries.

An existing multi-head checkpoint can be turned into a GQA model by
mean-pooling the key and value heads of each group and briefly training on
("uptraining"); ``mean_pool_kv_heads`` is that conversion.

Shapes: ``b`` batch, ``t`` sequence, ``h`` query heads, ``g`` key/value groups,
``d`` head width, ``d_out = h · d``.
"""

import torch
from torch import nn

from .ep05_self_attention import scaled_dot_product_attention
from .ep07_multihead_visual import merge_heads, split_heads
from .ep08_multihead_attention import MultiHeadAttention


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Repeats each key/value head ``n_rep`` times, keeping the copies of a head together.

    Args:
        x (torch.Tensor): ``(b, g, t, d)`` keys or values of ``g`` groups, any dtype.
        n_rep (int): Query heads per group, ``h / g``.

    Returns:
        torch.Tensor: ``(b, g · n_rep, t, d)``, same dtype, with
        ``out[:, i] == x[:, i // n_rep]``.

    Example:
        >>> x = torch.tensor([10.0, 20.0]).view(1, 2, 1, 1)   # two groups
        >>> repeat_kv(x, 3).flatten()
        tensor([10., 10., 10., 20., 20., 20.])
    """
    ### BEGIN SOLUTION
    return x.repeat_interleave(n_rep, dim=1)
    ### END SOLUTION


class GroupedQueryAttention(MultiHeadAttention):
    """Causal attention with ``num_heads`` query heads sharing ``num_kv_groups`` key/value heads.

    Args:
        d_in (int): Input width.
        d_out (int): Width of all query heads together (and of the output); divisible by ``num_heads``.
        num_heads (int): Query heads ``h``.
        num_kv_groups (int): Key/value heads ``g``; divides ``num_heads``.
        context_length (int): Longest sequence; size of the ``mask`` buffer.
        dropout (float): Probability of zeroing an attention weight in training. Defaults to 0.
        qkv_bias (bool): Whether the query/key/value projections have a bias. Defaults to False.

    Attributes:
        W_query (nn.Linear): ``d_in → d_out``, the ``h`` query heads.
        W_key, W_value (nn.Linear): ``d_in → g · head_dim``, the ``g`` key and value heads.
        out_proj (nn.Linear): ``d_out → d_out`` with bias.
        num_kv_groups (int): ``g``.
        dropout, mask, num_heads, head_dim: As in :class:`MultiHeadAttention`.
    """

    def __init__(self, d_in: int, d_out: int, num_heads: int, num_kv_groups: int, context_length: int,
                 dropout: float = 0.0, qkv_bias: bool = False):
        super().__init__(d_in, d_out, context_length, dropout, num_heads, qkv_bias)
        if num_heads % num_kv_groups:
            raise ValueError(f"num_heads ({num_heads}) must be divisible by num_kv_groups ({num_kv_groups})")
        self.num_kv_groups = num_kv_groups
        self.W_key = nn.Linear(d_in, num_kv_groups * self.head_dim, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, num_kv_groups * self.head_dim, bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Causal grouped-query attention over ``x``.

        Query head ``i`` attends to key/value head ``i // (h / g)``, with scores
        scaled by ``1/√head_dim`` and dropout on the weights; the heads are
        merged (head 0 first) and passed through ``out_proj``.

        Args:
            x (torch.Tensor): ``(b, t, d_in)``, float, ``t <= context_length``.

        Returns:
            torch.Tensor: ``(b, t, d_out)``, same dtype
            (float64 inputs give a float64 result; the softmax may be computed in float32).
            Output ``i`` depends only on ``x[:, :i+1]``.

        Example:
            >>> gqa = GroupedQueryAttention(d_in=3, d_out=8, num_heads=4, num_kv_groups=2, context_length=6)
            >>> gqa.W_key.weight.shape                # two key heads of width 2
            torch.Size([4, 3])
            >>> gqa(torch.randn(2, 6, 3)).shape
            torch.Size([2, 6, 8])
        """
        ### BEGIN SOLUTION
        t = x.shape[1]
        q = split_heads(self.W_query(x), self.num_heads)
        n_rep = self.num_heads // self.num_kv_groups
        k, v = (repeat_kv(split_heads(proj(x), self.num_kv_groups), n_rep) for proj in (self.W_key, self.W_value))
        _, weights = scaled_dot_product_attention(q, k, v, self.mask[:t, :t])
        return self.out_proj(merge_heads(self.dropout(weights) @ v))
        ### END SOLUTION


def mean_pool_kv_heads(weight: torch.Tensor, num_heads: int, num_kv_groups: int) -> torch.Tensor:
    """Converts a multi-head key or value projection to GQA by averaging the heads of each group.

    The first axis of ``weight`` holds ``num_heads`` heads of ``head_dim``
    outputs each (``nn.Linear`` layout: output features first). Group ``j``
    is made of the consecutive heads ``j·r … (j+1)·r − 1``, ``r = num_heads /
    num_kv_groups`` (the heads that :func:`repeat_kv` later pairs with it), and
    its new head is their element-wise mean — the GQA paper's conversion
    before uptraining.

    Args:
        weight (torch.Tensor): ``(num_heads · head_dim, ...)`` float: a
            ``W_key``/``W_value`` weight ``(num_heads · head_dim, d_in)`` or its bias.
        num_heads (int): Heads ``h`` of the multi-head projection.
        num_kv_groups (int): Groups ``g``; divides ``h``.

    Returns:
        torch.Tensor: ``(num_kv_groups · head_dim, ...)``, same dtype.

    Example:
        >>> w = torch.tensor([[1.0], [3.0], [5.0], [7.0]])    # 4 heads of width 1, d_in 1
        >>> mean_pool_kv_heads(w, num_heads=4, num_kv_groups=2)
        tensor([[2.],
                [6.]])
    """
    ### BEGIN SOLUTION
    heads_per_group = num_heads // num_kv_groups
    # (h·d, ...) -> (g, h/g, d, ...): consecutive heads form a group; average over the heads in it
    grouped = weight.unflatten(0, (num_kv_groups, heads_per_group, -1))
    return grouped.mean(dim=1).flatten(0, 1)
    ### END SOLUTION


def kv_cache_elements_per_token(mechanism: str, n_layers: int, n_heads: int, head_dim: int,
                                n_groups: int | None = None) -> int:
    """Cached key and value elements per token, over all layers, for MHA, GQA and MQA.

    Each layer caches one key and one value vector of width ``d_h`` per
    key/value head: ``n_h`` heads for MHA, ``n_g`` for GQA, one for MQA, so
    ``2 · n_h · d_h · l``, ``2 · n_g · d_h · l`` and ``2 · d_h · l`` (DeepSeek-V2, Table 1).

    Args:
        mechanism (str): ``"mha"``, ``"gqa"`` or ``"mqa"``.
        n_layers (int): Layers ``l``.
        n_heads (int): Query heads ``n_h``.
        head_dim (int): Head width ``d_h``.
        n_groups (int, optional): Key/value groups ``n_g``; required for ``"gqa"``.

    Returns:
        int: Elements per token.

    Raises:
        ValueError: For another ``mechanism``, or ``"gqa"`` without ``n_groups``.

    Example:
        >>> [kv_cache_elements_per_token(m, 2, 8, 4, n_groups=2) for m in ("mha", "gqa", "mqa")]
        [128, 32, 16]
    """
    ### BEGIN SOLUTION
    if mechanism == "gqa" and n_groups is None:
        raise ValueError("'gqa' needs n_groups")
    kv_heads = {"mha": n_heads, "gqa": n_groups, "mqa": 1}
    if mechanism not in kv_heads:
        raise ValueError(f"unknown mechanism {mechanism!r}; expected 'mha', 'gqa' or 'mqa'")
    return 2 * kv_heads[mechanism] * head_dim * n_layers
    ### END SOLUTION
