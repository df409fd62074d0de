"""Episode 1 — DeepSeek Series Introduction: how big is the model, and what does it cost to run?

Three counts that frame the series: the trainable parameters of any PyTorch
model; the total and *activated* parameters of a DeepSeek-style
Mixture-of-Experts model (671B total but only 37B used per token for
DeepSeek-V3); and the memory a key-value cache takes, the cost that Multi-head
Latent Attention (episodes 12-17) was invented to cut.

The configuration is the course's :class:`~config.DeepSeekConfig`, whose fields
are DeepSeek-V3's ``ModelArgs``.
"""

from torch import nn

# The presets are used by the examples below and by the checks (``impl.deepseek_v3()``).
from .config import DeepSeekConfig, deepseek_v2, deepseek_v3, tiny  # noqa: F401


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (elements, not tensors) of ``model``.

    A parameter shared by two sub-modules (e.g. an embedding tied to the output
    head) counts once; frozen parameters (``requires_grad=False``) and buffers
    (e.g. BatchNorm's running statistics) do not count.

    Args:
        model (nn.Module): Any module.

    Returns:
        int: The total number of elements of its trainable parameters.

    Example:
        >>> count_parameters(nn.Linear(4, 3))        # 4·3 weights + 3 biases
        15
    """
    ### BEGIN SOLUTION
    # model.parameters() yields each Parameter object once, even when it is shared.
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
    ### END SOLUTION


def moe_parameter_counts(cfg: DeepSeekConfig) -> tuple[int, int]:
    """Total and activated parameters of a DeepSeek-V3-style model (``inference/model.py``).

    Counts exactly the parameters DeepSeek-V3's ``Transformer`` instantiates on
    one device (bfloat16 weights, so no FP8 scale tensors), all ``nn.Linear``
    layers without bias:

    * ``embed`` ``(vocab_size, dim)`` and a separate (untied) output ``head``
      ``(vocab_size, dim)``, plus the final ``norm`` ``(dim,)``;
    * per layer: ``attn_norm`` and ``ffn_norm`` ``(dim,)`` each, and MLA:
      the query projection — ``wq`` ``dim → n_heads·(qk_nope_head_dim + qk_rope_head_dim)``
      when ``q_lora_rank == 0``, else ``wq_a`` ``dim → q_lora_rank``, ``q_norm``
      ``(q_lora_rank,)`` and ``wq_b`` ``q_lora_rank → n_heads·qk_head_dim`` —,
      ``wkv_a`` ``dim → kv_lora_rank + qk_rope_head_dim`` (one rope key shared
      by all heads), ``kv_norm`` ``(kv_lora_rank,)``, ``wkv_b``
      ``kv_lora_rank → n_heads·(qk_nope_head_dim + v_head_dim)`` and ``wo``
      ``n_heads·v_head_dim → dim``;
    * the first ``n_dense_layers`` layers: a SwiGLU MLP ``dim → inter_dim``
      (``w1, w2, w3``, so ``3·dim·inter_dim``);
    * every other layer (MoE): the router ``gate`` ``(n_routed_experts, dim)``
      plus its selection bias ``(n_routed_experts,)`` when ``cfg.gate_bias``,
      ``n_routed_experts`` SwiGLU experts of width ``moe_inter_dim``, and the
      shared experts fused into one SwiGLU MLP of width
      ``n_shared_experts·moe_inter_dim``.

    *Activated* parameters are those one token's forward pass uses: everything
    except the routed experts it is not sent to, i.e. the total minus
    ``(n_routed_experts - n_activated_experts)`` experts in every MoE layer.
    The embedding table and the head count whole, as in DeepSeek's own figure
    ("including 0.9B for Embedding and 0.9B for the output Head").
    DeepSeek-V3 gives 671.0B total, 37.6B activated (published: 671B / 37B);
    DeepSeek-V2 235.7B / 21.4B (published: 236B / 21B).

    Args:
        cfg (DeepSeekConfig): The model's hyperparameters.

    Returns:
        tuple[int, int]: ``(total, activated)`` parameter counts.

    Example:
        >>> total, activated = moe_parameter_counts(deepseek_v3())
        >>> round(total / 1e9, 1), round(activated / 1e9, 1)
        (671.0, 37.6)
    """
    ### BEGIN SOLUTION
    def swiglu_mlp(dim: int, inter_dim: int) -> int:  # w1, w3: dim → inter; w2: inter → dim
        return 3 * dim * inter_dim

    d, h = cfg.dim, cfg.n_heads
    if cfg.q_lora_rank == 0:
        query = d * h * cfg.qk_head_dim                                             # wq
    else:
        query = d * cfg.q_lora_rank + cfg.q_lora_rank + cfg.q_lora_rank * h * cfg.qk_head_dim  # wq_a, q_norm, wq_b
    attention = (query
                 + d * (cfg.kv_lora_rank + cfg.qk_rope_head_dim)                # wkv_a
                 + cfg.kv_lora_rank                                             # kv_norm
                 + cfg.kv_lora_rank * h * (cfg.qk_nope_head_dim + cfg.v_head_dim)  # wkv_b
                 + h * cfg.v_head_dim * d)                                      # wo
    per_layer = attention + 2 * d                                               # + attn_norm, ffn_norm

    expert = swiglu_mlp(d, cfg.moe_inter_dim)
    gate = cfg.n_routed_experts * d + (cfg.n_routed_experts if cfg.gate_bias else 0)
    moe = gate + cfg.n_routed_experts * expert + swiglu_mlp(d, cfg.n_shared_experts * cfg.moe_inter_dim)
    n_moe_layers = cfg.n_layers - cfg.n_dense_layers

    total = (2 * cfg.vocab_size * d + d                                         # embed, head, final norm
             + cfg.n_layers * per_layer
             + cfg.n_dense_layers * swiglu_mlp(d, cfg.inter_dim)
             + n_moe_layers * moe)
    idle_experts = cfg.n_routed_experts - cfg.n_activated_experts
    activated = total - n_moe_layers * idle_experts * expert
    return total, activated
    ### END SOLUTION


def kv_cache_bytes(n_layers: int, n_kv_heads: int, head_dim: int, seq_len: int, batch: int,
                   bytes_per_element: int) -> int:
    """Memory of a standard key-value cache, in bytes.

    Every layer stores one key and one value vector of ``head_dim`` numbers per
    key-value head, per cached token, per sequence of the batch:
    ``2 · n_layers · n_kv_heads · head_dim · seq_len · batch · bytes_per_element``.
    (Multi-head attention has ``n_kv_heads = n_heads``; multi-query attention 1.)

    Args:
        n_layers (int): Transformer layers.
        n_kv_heads (int): Key-value heads per layer.
        head_dim (int): Width of one key (and one value) head.
        seq_len (int): Cached tokens per sequence.
        batch (int): Sequences.
        bytes_per_element (int): 2 for bfloat16/float16, 4 for float32, 1 for FP8.

    Returns:
        int: Bytes (a float only if ``bytes_per_element`` is one).

    Example:
        >>> kv_cache_bytes(32, 32, 128, 4096, 1, 2) / 2**30   # Llama-2-7B, 4K tokens, fp16: GiB
        2.0
    """
    ### BEGIN SOLUTION
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch * bytes_per_element  # 2: keys and values
    ### END SOLUTION
