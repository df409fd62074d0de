"""Capstone — a DeepSeek-V3 block and a tiny DeepSeek model, assembled from your own parts.

Everything the course built comes together here, name for name as in DeepSeek-V3's
``inference/model.py``:

* :class:`DeepSeekBlock` (DeepSeek's ``Block``) is *pre-norm*: each sub-layer reads a
  normalised copy of the residual stream and adds its output back to it::

      h   = x + attn(attn_norm(x), start_pos, freqs_cis, mask)      # MLA, episode 17
      out = h + ffn(ffn_norm(h))                                     # MoE (ep19) or MLP (ep02)

  The first ``n_dense_layers`` blocks use a dense SwiGLU ``MLP(dim, inter_dim)``, the
  others DeepSeekMoE.
* :class:`TinyDeepSeek` (DeepSeek's ``Transformer``): token embedding → blocks → final
  RMSNorm → output head, with the RoPE table of episode 16 (YaRN when the config asks
  for it) and the additive causal mask of :func:`additive_causal_mask`.
  :meth:`TinyDeepSeek.generate` decodes greedily with the MLA cache: the prompt in one
  forward pass, then one token at a time at ``start_pos`` = tokens already cached.

The parts come from your own episode modules through the relative imports below
(``RMSNorm`` and ``MLP`` from episode 2, the RoPE table from 16, ``MLA`` from 17, ``MoE``
from 19, ``greedy_next_token`` from 3, ``causal_mask`` from 6), so the grader can tell
you *which* part breaks the block: it feeds each part the reference's input and names the
first one whose output differs.

One deliberate difference from DeepSeek-V3: ``TinyDeepSeek.forward`` returns the logits
of *every* position, ``(b, t, vocab_size)``, not only the last one (DeepSeek's
``Transformer.forward`` returns ``logits[:, -1]``). Every position is what training and
grading need; generation takes ``[:, -1]`` itself.

Shapes: ``b`` batch, ``t`` new tokens, ``start_pos`` tokens already cached,
``dim`` model width, ``r`` = ``qk_rope_head_dim``.
"""

import torch
from torch import nn

from .config import DeepSeekConfig
from .ep02_building_blocks import MLP, RMSNorm
from .ep03_token_journey import greedy_next_token
from .ep06_causal_attention import causal_mask
from .ep16_rope import freqs_cis_from_config
from .ep17_mla_rope import MLA
from .ep19_moe import MoE


def additive_causal_mask(seqlen: int, start_pos: int = 0) -> torch.Tensor | None:
    """The mask MLA adds to its scores for ``seqlen`` new tokens after ``start_pos`` cached ones.

    ``0`` where a query may attend, ``-inf`` where it may not: new token ``i`` sits at
    position ``start_pos + i`` and sees every key up to that position (episode 6's
    ``causal_mask(seqlen, start_pos + seqlen)``, made additive). As in DeepSeek-V3, a
    single new token sees everything cached and needs no mask: ``None``. For a prompt
    (``start_pos = 0``) this is DeepSeek's ``torch.full((t, t), -inf).triu(1)``; the
    ``start_pos`` offset also makes prompts fed in several chunks correct.

    Args:
        seqlen (int): Number of new tokens ``t >= 1``.
        start_pos (int): Number of tokens already in the cache. Defaults to 0.

    Returns:
        torch.Tensor or None: ``(t, start_pos + t)`` float32 (0 or ``-inf``), or None when ``t == 1``.

    Example:
        >>> additive_causal_mask(2, start_pos=1)
        tensor([[0., 0., -inf],
                [0., 0., 0.]])
        >>> additive_causal_mask(1, start_pos=5) is None
        True
    """
    ### BEGIN SOLUTION
    if seqlen == 1:
        return None
    blocked = causal_mask(seqlen, start_pos + seqlen)
    return torch.zeros(blocked.shape).masked_fill(blocked, float("-inf"))
    ### END SOLUTION


class DeepSeekBlock(nn.Module):
    """One transformer block of DeepSeek-V3 (its ``Block``): pre-norm MLA and pre-norm FFN with residuals.

    Args:
        layer_id (int): Index of the block in the model, from 0. Blocks with
            ``layer_id < cfg.n_dense_layers`` use a dense MLP, the others MoE.
        cfg (DeepSeekConfig): The model's hyperparameters.

    Attributes:
        attn (MLA): Multi-head latent attention with decoupled RoPE (episode 17).
        ffn (MLP or MoE): ``MLP(cfg.dim, cfg.inter_dim)`` (episode 2) for the first
            ``n_dense_layers`` blocks, else ``MoE(cfg)`` (episode 19).
        attn_norm (RMSNorm): ``(dim,)``, before the attention.
        ffn_norm (RMSNorm): ``(dim,)``, before the feed-forward network.
    """

    def __init__(self, layer_id: int, cfg: DeepSeekConfig):
        super().__init__()
        self.attn = MLA(cfg)
        self.ffn = MLP(cfg.dim, cfg.inter_dim) if layer_id < cfg.n_dense_layers else MoE(cfg)
        self.attn_norm = RMSNorm(cfg.dim)
        self.ffn_norm = RMSNorm(cfg.dim)

    def forward(self, x: torch.Tensor, start_pos: int, freqs_cis: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        """``h = x + attn(attn_norm(x), …)``, then ``h + ffn(ffn_norm(h))``.

        Args:
            x (torch.Tensor): ``(b, t, dim)`` float, the residual stream of ``t`` new
                tokens at positions ``start_pos … start_pos + t - 1``.
            start_pos (int): Number of tokens already in the attention's cache.
            freqs_cis (torch.Tensor): ``(t, r // 2)`` complex, the RoPE rows of the new
                tokens' positions (``table[start_pos:start_pos + t]``).
            mask (torch.Tensor, optional): Additive ``(t, start_pos + t)`` float mask
                (:func:`additive_causal_mask`), None for a single token.

        Returns:
            torch.Tensor: ``(b, t, dim)``, dtype of ``x``.

        Example:
            >>> cfg = DeepSeekConfig()                      # dim 32, 1 dense block, rope dims 4
            >>> freqs_cis = freqs_cis_from_config(cfg)[:5]
            >>> DeepSeekBlock(1, cfg)(torch.randn(2, 5, 32), 0, freqs_cis, additive_causal_mask(5)).shape
            torch.Size([2, 5, 32])
        """
        ### BEGIN SOLUTION
        h = x + self.attn(self.attn_norm(x), start_pos, freqs_cis, mask)
        return h + self.ffn(self.ffn_norm(h))
        ### END SOLUTION


class TinyDeepSeek(nn.Module):
    """A DeepSeek-V3 language model (its ``Transformer``): embedding, blocks, final norm, head.

    Args:
        cfg (DeepSeekConfig): The model's hyperparameters (``tiny()`` for tests).

    Attributes:
        max_seq_len (int): Longest sequence (prompt + generated) the caches and the RoPE table hold.
        embed (nn.Embedding): ``(vocab_size, dim)`` token embedding.
        layers (nn.ModuleList): ``n_layers`` :class:`DeepSeekBlock`, block ``i`` built with ``layer_id = i``.
        norm (RMSNorm): ``(dim,)``, on the last block's output.
        head (nn.Linear): ``dim → vocab_size``, no bias (not tied to the embedding).
        freqs_cis (torch.Tensor): ``(max_seq_len, r // 2)`` complex64 RoPE table,
            ``freqs_cis_from_config(cfg)`` (episode 16; YaRN when ``cfg.yarn_enabled``).
    """

    def __init__(self, cfg: DeepSeekConfig):
        super().__init__()
        self.max_seq_len = cfg.max_seq_len
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList([DeepSeekBlock(layer_id, cfg) for layer_id in range(cfg.n_layers)])
        self.norm = RMSNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.register_buffer("freqs_cis", freqs_cis_from_config(cfg), persistent=False)

    def forward(self, tokens: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        """Logits for ``t`` new tokens at positions ``start_pos …``, attending to the cached ones.

        Every block gets the same RoPE rows (``freqs_cis[start_pos:start_pos + t]``) and
        the same :func:`additive_causal_mask`; each block's attention caches the new tokens.

        Args:
            tokens (torch.Tensor): ``(b, t)`` int64 token ids, ``b <= max_batch_size``,
                ``start_pos + t <= max_seq_len``.
            start_pos (int): Number of tokens already cached (0 for a new prompt). Defaults to 0.

        Returns:
            torch.Tensor: ``(b, t, vocab_size)`` float32 logits of *every* new position
            (DeepSeek-V3 returns only ``[:, -1]``, the last one).

        Example:
            >>> model = TinyDeepSeek(DeepSeekConfig())      # vocab 97
            >>> model(torch.randint(97, (2, 5))).shape
            torch.Size([2, 5, 97])
        """
        ### BEGIN SOLUTION
        seqlen = tokens.shape[1]
        h = self.embed(tokens)
        freqs_cis = self.freqs_cis[start_pos:start_pos + seqlen]
        mask = additive_causal_mask(seqlen, start_pos)
        for layer in self.layers:
            h = layer(h, start_pos, freqs_cis, mask)
        return self.head(self.norm(h))
        ### END SOLUTION

    @torch.no_grad()
    def generate(self, prompt_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy decoding with the MLA cache.

        The prompt goes through :meth:`forward` once (``start_pos = 0``); after that
        only the newest token is fed, at ``start_pos`` = the number of tokens already
        cached, and the next token is ``greedy_next_token`` (episode 3) of the last
        position's logits. ``max_new_tokens`` forward passes in all; the caches are
        overwritten from position 0 by the next call.

        Args:
            prompt_ids (torch.Tensor): ``(b, t)`` int64 prompt, ``t >= 1``,
                ``b <= max_batch_size``, ``t + max_new_tokens <= max_seq_len``.
            max_new_tokens (int): Number of tokens to generate, ``>= 0``.

        Returns:
            torch.Tensor: ``(b, t + max_new_tokens)`` int64, the prompt followed by the new tokens.

        Example:
            >>> model = TinyDeepSeek(DeepSeekConfig())
            >>> model.generate(torch.tensor([[5, 7, 11]]), max_new_tokens=4).shape
            torch.Size([1, 7])
        """
        ### BEGIN SOLUTION
        ids, new, start_pos = prompt_ids, prompt_ids, 0
        for _ in range(max_new_tokens):
            logits = self(new, start_pos)
            start_pos += new.shape[1]
            new = greedy_next_token(logits[:, -1]).unsqueeze(1)  # (b, 1)
            ids = torch.cat([ids, new], dim=1)
        return ids
        ### END SOLUTION
