"""Checks for episode 1: counting parameters (dense and Mixture-of-Experts) and KV-cache memory."""

import dataclasses

from torch import nn

from ..probing import named
from ..registry import Episode, case

EPISODE = Episode("ep01", "DeepSeek Series Introduction", video="https://youtu.be/QWNxQIq0hMo",
                  module="ep01_introduction")


# --- count_parameters -----------------------------------------------------------------------------

count = EPISODE.exercise("count_parameters")


class TinyLM(nn.Module):
    """A small language model with the features that make counting tricky.

    ``tied``: the head shares the embedding's weight; ``frozen``: the embedding
    does not train; a BatchNorm adds buffers that are not parameters.
    """

    def __init__(self, vocab, dim, hidden, tied=False, frozen=False):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, dim, bias=False))
        self.norm = nn.BatchNorm1d(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        if tied:
            self.head.weight = self.embed.weight
        if frozen:
            self.embed.weight.requires_grad_(False)


@count.check(case(vocab=11, dim=4, hidden=6), case(vocab=7, dim=3, hidden=5, tied=True),
             case(vocab=9, dim=5, hidden=2, frozen=True))
def tiny_language_model(impl, c, gen):
    """a small model (embedding, MLP, BatchNorm, head); tied or frozen weights"""
    return impl.count_parameters(TinyLM(c.vocab, c.dim, c.hidden, c.params.get("tied", False),
                                        c.params.get("frozen", False)))


@count.check(case(d_in=6, d_out=3), case(d_in=1, d_out=1))
def single_linear(impl, c, gen):
    """one nn.Linear: weight and bias"""
    return impl.count_parameters(nn.Linear(c.d_in, c.d_out))


@count.check(case(vocab=13, dim=6, hidden=10, tied=True, frozen=True), case(vocab=5, dim=8, hidden=3), hidden=True)
def hidden_models(impl, c, gen):
    """other sizes; tied and frozen together"""
    return tiny_language_model(impl, c, gen)


@count.misconception("counts_frozen", "Frozen parameters (requires_grad=False) are not trainable: count only "
                     "the parameters with p.requires_grad.")
def _(model):
    return sum(p.numel() for p in model.parameters())


@count.misconception("counts_tensors", "You counted parameter tensors; count their elements: sum of p.numel().")
def _(model):
    return sum(1 for p in model.parameters() if p.requires_grad)


@count.misconception("state_dict", "state_dict() also holds buffers (e.g. BatchNorm's running statistics) and lists "
                     "a tied weight under both names. Count model.parameters() instead.")
def _(model):
    return sum(t.numel() for t in model.state_dict().values())


@count.misconception("tied_counted_twice", "A weight shared by two layers (tied embedding and head) is one "
                     "parameter: model.parameters() lists it once, so sum over that.")
def _(model):
    return sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False) if p.requires_grad)


# --- moe_parameter_counts --------------------------------------------------------------------------

moe = EPISODE.exercise("moe_parameter_counts")


def config(impl, c):
    """The case's config: the preset ``c.preset`` of the target's ``config`` with the other case params."""
    overrides = {k: v for k, v in c.params.items() if k != "preset"}
    return getattr(impl, c.preset)(**overrides)


def counts(impl, c):
    return named(impl.moe_parameter_counts(config(impl, c)), "total", "activated")


@moe.check(case(preset="tiny"), case(preset="tiny", q_lora_rank=0, gate_bias=False),
           case(preset="tiny", n_layers=3, n_dense_layers=2, n_shared_experts=2))
def tiny_models(impl, c, gen):
    """tiny configs: with and without query compression and gate bias, more dense layers"""
    return counts(impl, c)


@moe.check(case(preset="deepseek_v3"))
def deepseek_v3_preset(impl, c, gen):
    """DeepSeek-V3: 671B total, 37B activated (published)"""
    return counts(impl, c)


@moe.check(case(preset="deepseek_v2"), case(preset="tiny", n_dense_layers=0, n_activated_experts=3, vocab_size=50),
           case(preset="tiny", dim=20, n_heads=3, n_routed_experts=12, n_shared_experts=0, q_lora_rank=0), hidden=True)
def hidden_models_moe(impl, c, gen):
    """DeepSeek-V2 and other configs"""
    return counts(impl, c)


def _reference_counts(cfg):
    from solutions.ep01_introduction import moe_parameter_counts

    return moe_parameter_counts(cfg)


@moe.misconception("tied_head", "DeepSeek's output head is its own (vocab_size, dim) matrix, not tied to the "
                   "embedding: count both.")
def _(cfg):
    total, activated = _reference_counts(cfg)
    return total - cfg.vocab_size * cfg.dim, activated - cfg.vocab_size * cfg.dim


@moe.misconception("all_layers_moe", "The first n_dense_layers blocks use a dense MLP of width inter_dim, not "
                   "MoE: only n_layers - n_dense_layers blocks have experts.")
def _(cfg):
    return _reference_counts(dataclasses.replace(cfg, n_dense_layers=0))


@moe.misconception("ignores_q_lora", "With q_lora_rank > 0 the query is compressed: wq_a (dim → q_lora_rank), "
                   "q_norm and wq_b (q_lora_rank → n_heads·qk_head_dim) replace the full wq.")
def _(cfg):
    return _reference_counts(dataclasses.replace(cfg, q_lora_rank=0))


def _expert_block(cfg, n_experts):
    """Parameters of ``n_experts`` SwiGLU experts of width ``moe_inter_dim`` over all MoE layers."""
    return (cfg.n_layers - cfg.n_dense_layers) * n_experts * 3 * cfg.dim * cfg.moe_inter_dim


@moe.misconception("no_router", "Each MoE layer has a router: gate weight (n_routed_experts, dim), plus a bias "
                   "(n_routed_experts,) when cfg.gate_bias. Count it in total and activated.")
def _(cfg):
    router = (cfg.n_layers - cfg.n_dense_layers) * cfg.n_routed_experts * (cfg.dim + int(cfg.gate_bias))
    total, activated = _reference_counts(cfg)
    return total - router, activated - router


@moe.misconception("activated_without_shared", "Every token also goes through the shared experts: activated = "
                   "all non-expert parameters + shared experts + the n_activated_experts routed ones.")
def _(cfg):
    total, activated = _reference_counts(cfg)
    return total, activated - _expert_block(cfg, cfg.n_shared_experts)


# --- kv_cache_bytes --------------------------------------------------------------------------------

kv = EPISODE.exercise("kv_cache_bytes")

KV_ARGS = ("n_layers", "n_kv_heads", "head_dim", "seq_len", "batch", "bytes_per_element")


def kv_bytes(impl, c):
    return impl.kv_cache_bytes(*(c.params[k] for k in KV_ARGS))


# No layer count, batch or element size of 2 (the factor of keys and values), so that each mistake below gives
# its own number and only its own hint shows.
@kv.check(case(n_layers=3, n_kv_heads=5, head_dim=8, seq_len=7, batch=5, bytes_per_element=4),
          case(n_layers=32, n_kv_heads=32, head_dim=128, seq_len=4096, batch=1, bytes_per_element=4),
          case(n_layers=6, n_kv_heads=1, head_dim=16, seq_len=1, batch=3, bytes_per_element=8))
def cache_sizes(impl, c, gen):
    """bytes of keys and values for every layer, head, token and sequence"""
    return kv_bytes(impl, c)


@kv.check(case(n_layers=61, n_kv_heads=128, head_dim=128, seq_len=32768, batch=4, bytes_per_element=1),
          case(n_layers=5, n_kv_heads=3, head_dim=6, seq_len=9, batch=7, bytes_per_element=4), hidden=True)
def hidden_cache_sizes(impl, c, gen):
    """a DeepSeek-sized MHA cache in FP8; odd sizes"""
    return kv_bytes(impl, c)


@kv.misconception("keys_only", "The cache holds keys *and* values: multiply by 2.")
def _(n_layers, n_kv_heads, head_dim, seq_len, batch, bytes_per_element):
    return n_layers * n_kv_heads * head_dim * seq_len * batch * bytes_per_element


@kv.misconception("one_layer", "Every layer keeps its own keys and values: multiply by n_layers.")
def _(n_layers, n_kv_heads, head_dim, seq_len, batch, bytes_per_element):
    return 2 * n_kv_heads * head_dim * seq_len * batch * bytes_per_element


@kv.misconception("elements_not_bytes", "That is the number of cached elements; multiply by bytes_per_element for "
                  "the size in bytes.")
def _(n_layers, n_kv_heads, head_dim, seq_len, batch, bytes_per_element):
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch


@kv.misconception("one_sequence", "Each sequence of the batch has its own cache: multiply by batch.")
def _(n_layers, n_kv_heads, head_dim, seq_len, batch, bytes_per_element):
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * bytes_per_element
