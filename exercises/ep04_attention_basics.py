"""Episode 4 — Attention Mechanism Explained.

Simplified self-attention without trainable weights: every token scores every
other token by a dot product, the scores of each query row are turned into
weights by a softmax, and each token's context vector is the weighted sum of all
token embeddings.

Shapes: ``b`` batch, ``t`` tokens, ``d`` embedding width.
"""

import torch


def attention_scores(x: torch.Tensor) -> torch.Tensor:
    """Dot-product similarity of every token with every token.

    Args:
        x (torch.Tensor): Embeddings, shape ``(b, t, d)``, float.

    Returns:
        torch.Tensor: Scores ``(b, t, t)`` with ``scores[n, i, j] = x[n, i] · x[n, j]``,
        same dtype as ``x``. Row ``i`` holds query ``i``'s score for every key ``j``.

    Example:
        >>> x = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
        >>> attention_scores(x)
        tensor([[[1., 1.],
                 [1., 2.]]])
    """
    raise NotImplementedError("ep04.attention_scores")


def attention_weights(scores: torch.Tensor) -> torch.Tensor:
    """Normalises each row of scores into attention weights with a softmax.

    The softmax must stay finite for large scores (subtract the row maximum, or
    use ``torch.softmax``).

    Args:
        scores (torch.Tensor): Scores, shape ``(b, t, s)``, float.

    Returns:
        torch.Tensor: Weights ``(b, t, s)``, same dtype; every row (last axis)
        is non-negative and sums to 1
        (float64 inputs give a float64 result; the softmax may be computed in float32).

    Example:
        >>> attention_weights(torch.tensor([[[0.0, 0.0], [0.0, 2.0]]])).round(decimals=4)
        tensor([[[0.5000, 0.5000],
                 [0.1192, 0.8808]]])
    """
    raise NotImplementedError("ep04.attention_weights")


def context_vectors(x: torch.Tensor) -> torch.Tensor:
    """Simplified self-attention: ``softmax(x xᵀ) x`` (no trainable weights, no scaling).

    Args:
        x (torch.Tensor): Embeddings, shape ``(b, t, d)``, float.

    Returns:
        torch.Tensor: Context vectors ``(b, t, d)``, same dtype: row ``i`` is the
        attention-weighted average of all token embeddings, weighted by query ``i``'s row
        (float64 inputs give a float64 result; the softmax may be computed in float32).

    Example:
        >>> x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
        >>> context_vectors(x).round(decimals=4)
        tensor([[[0.7311, 0.2689],
                 [0.2689, 0.7311]]])
    """
    raise NotImplementedError("ep04.context_vectors")
