"""Episode 3 — Journey of a Token into the LLM Architecture: in at the embedding, out at the logits.

A token id picks one row of the embedding table; the transformer blocks (the
rest of the course) turn those vectors into hidden states; the output head maps
each hidden state to one score (logit) per vocabulary entry. In training the
logits meet the next tokens in the cross-entropy loss; in generation they
become the next token, either the most likely one (greedy) or a sample from a
distribution shaped by temperature, top-k and top-p.

Shapes: ``b`` batch, ``t`` sequence length, ``dim`` model width, ``vocab``
vocabulary size. Token ids are ``torch.long``.
"""

import torch

from .ep02_building_blocks import softmax


def embed_tokens(token_ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Looks up the embedding vector of every token id (DeepSeek's ``embed``; no scaling).

    Args:
        token_ids (torch.Tensor): ``(b, t)`` integer ids in ``[0, vocab)`` (any leading shape works).
        table (torch.Tensor): ``(vocab, dim)`` embedding matrix, float; row ``i`` is token ``i``'s vector.

    Returns:
        torch.Tensor: ``(b, t, dim)``, dtype of ``table``; ``out[i, j] = table[token_ids[i, j]]``.

    Example:
        >>> table = torch.arange(6.0).view(3, 2)
        >>> embed_tokens(torch.tensor([[2, 0]]), table)
        tensor([[[4., 5.],
                 [0., 1.]]])
    """
    raise NotImplementedError("ep03.embed_tokens")


def lm_head(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Output head: one logit per vocabulary entry for every position.

    A bias-free linear layer (DeepSeek's ``head``, untied from the embedding):
    ``logits = h @ weight.T``. Logits are unnormalised scores, not probabilities.

    Args:
        h (torch.Tensor): ``(b, t, dim)`` final hidden states (after the final norm), float.
        weight (torch.Tensor): ``(vocab, dim)`` head matrix in ``nn.Linear`` layout, same dtype.

    Returns:
        torch.Tensor: ``(b, t, vocab)`` logits, dtype of ``h``.

    Example:
        >>> lm_head(torch.ones(1, 2, 3), torch.eye(4, 3)).shape
        torch.Size([1, 2, 4])
    """
    raise NotImplementedError("ep03.lm_head")


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy, ``mean(-log softmax(logits)[target])``, computed stably.

    Equals ``torch.nn.functional.cross_entropy(logits.reshape(-1, vocab),
    targets.reshape(-1))``. The log-probabilities come from
    ``logits - logsumexp(logits)`` with the row maximum subtracted inside the
    ``logsumexp``, so logits in the thousands neither overflow nor give ``log(0)``.

    Args:
        logits (torch.Tensor): ``(..., vocab)``, float, e.g. ``(b, t, vocab)``.
        targets (torch.Tensor): ``(...)`` integer ids in ``[0, vocab)``, e.g. ``(b, t)``.

    Returns:
        torch.Tensor: A scalar (0-dim) tensor in the dtype of ``logits``: the mean over all positions.

    Example:
        >>> cross_entropy(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))   # log 2
        tensor(0.6931)
    """
    raise NotImplementedError("ep03.cross_entropy")


def greedy_next_token(logits: torch.Tensor) -> torch.Tensor:
    """The most likely next token of every sequence (temperature 0 in DeepSeek's ``generate``).

    Args:
        logits (torch.Tensor): ``(b, vocab)`` logits of the last position, float
            (any leading shape works: the choice is along the last axis).

    Returns:
        torch.Tensor: ``(b,)`` ``torch.long`` ids; among equal maxima, the lowest id.

    Example:
        >>> greedy_next_token(torch.tensor([[0.1, 2.0, 2.0], [3.0, -1.0, 0.0]]))
        tensor([1, 0])
    """
    raise NotImplementedError("ep03.greedy_next_token")


def sampling_distribution(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                          top_p: float | None = None) -> torch.Tensor:
    """The probability vector the next token is sampled from.

    Applied in this order, independently for every row (last axis):

    1. **Temperature**: ``z = logits / temperature`` (``temperature > 0``; below 1
       sharpens, above 1 flattens).
    2. **Top-k** (if ``top_k`` is not None): keep the tokens whose ``z`` is at least
       the ``k``-th largest value of the row. Ties with the ``k``-th value are all
       kept (so more than ``k`` may survive); ``top_k >= vocab`` keeps everything.
       Top-k alone does not depend on the temperature.
    3. **Top-p** (nucleus, if ``top_p`` is not None): let ``q = softmax(z)`` over the
       tokens top-k kept (0 elsewhere). Token ``i`` stays if the probability mass of
       the tokens *strictly* more probable than it, ``sum(q[j] for q[j] > q[i])``, is
       ``< top_p``. That is the smallest most-probable set whose mass reaches
       ``top_p`` (the token that crosses the threshold is kept), with ties of the last
       kept probability all kept; the most probable token always stays.
       ``top_p >= 1`` keeps everything. The mass uses the temperature-scaled,
       top-k-renormalised ``q``, so temperature changes which tokens top-p keeps.
    4. The result is ``softmax(z)`` over the kept tokens: exactly 0 elsewhere, sums to 1.

    Args:
        logits (torch.Tensor): ``(b, vocab)`` (any leading shape), float.
        temperature (float): Divides the logits; must be > 0. Defaults to 1.0.
        top_k (int, optional): Keep the ``top_k`` highest (with ties), ``top_k >= 1``. Defaults to None.
        top_p (float, optional): Nucleus mass in ``(0, 1]``. Defaults to None.

    Returns:
        torch.Tensor: ``(b, vocab)`` probabilities, dtype of ``logits``; zero outside the
        kept set, each row sums to 1.

    Example:
        >>> logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
        >>> sampling_distribution(logits, top_p=0.7)        # 0.5 < 0.7, then 0.5 + 0.3 >= 0.7
        tensor([0.6250, 0.3750, 0.0000, 0.0000])
        >>> sampling_distribution(logits, top_k=3).round(decimals=4)
        tensor([0.5263, 0.3158, 0.1579, 0.0000])
    """
    raise NotImplementedError("ep03.sampling_distribution")
