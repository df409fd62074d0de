"""Independent proof of fidelity: the capstone's block and model against two other implementations of DeepSeek-V3.

* transformers' ``DeepseekV3DecoderLayer`` built from a tiny ``DeepseekV3Config`` (no download), with our
  block's weights mapped by name: the attention's map and config from ``test_parity_mla.py``, the MoE's
  (routed experts packed into 3-D tensors) and its config fields from ``test_parity_moe.py``, the dense
  MLP's below. Dense and MoE layers, the sigmoid gate with groups and a selection bias, q_lora on and off,
  YaRN. transformers' DeepSeek-V3 router is the sigmoid one with a bias only.
* DeepSeek-V3's own ``inference/model.py`` (``Block`` and ``Transformer``, read from a local copy of the
  official repository, see ``test_parity_mla.py``; skipped without one), loading our state dicts as they
  are: the same names. Its gate creates the selection bias only for ``dim == 7168``; the tests add it.
  DeepSeek-V2's softmax gate is compared here too.

Every comparison is float32 and must agree to 5e-5 (the issue's bound); run with ``-s`` to see the measured
differences.
"""

from __future__ import annotations

import pytest
import torch
from test_parity_mla import HF_NAMES, TOLERANCE, YARN, causal, inputs, max_diff, model_args, prefill_and_decode
from test_parity_mla import deepseek  # noqa: F401 (a pytest fixture, used by name)
from test_parity_mla import hf_config as hf_attention_config
from test_parity_moe import copy_weights
from test_parity_moe import hf_config as hf_moe_config
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3DecoderLayer, DeepseekV3RotaryEmbedding

from autograder.probing import load_weights
from solutions import ep16_rope as rope
from solutions.capstone import DeepSeekBlock, TinyDeepSeek
from solutions.config import tiny
from solutions.ep19_moe import MoE

V2_GATE = dict(score_func="softmax", gate_bias=False, route_scale=1.5)
CONFIGS = {"q_lora": {}, "no_q_lora": {"q_lora_rank": 0}, "q_lora_yarn": YARN,
           "no_q_lora_no_groups": {"q_lora_rank": 0, "n_expert_groups": 1, "n_limited_groups": 1}}
LAYERS = {"dense": 0, "moe": 1}  # tiny() has n_dense_layers = 1


def ours(cfg, layer_id, seed=321):
    return load_weights(DeepSeekBlock(layer_id, cfg), seed)


# --- transformers -------------------------------------------------------------------------------


# Our dense MLP's names → DeepseekV3MLP's; the DeepseekV3MoE config fields test_parity_moe.hf_config sets.
HF_MLP_NAMES = {"w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}
MOE_FIELDS = ("moe_intermediate_size", "n_routed_experts", "n_shared_experts", "num_experts_per_tok", "n_group",
              "topk_group", "routed_scaling_factor", "norm_topk_prob")


def hf_layer(cfg, layer_id: int, block: DeepSeekBlock) -> DeepseekV3DecoderLayer:
    """transformers' decoder layer with ``block``'s weights (a MoE's are redrawn by ``copy_weights`` first)."""
    hc = hf_attention_config(cfg)
    moe_config = hf_moe_config(cfg, "v3")
    hc.update({name: getattr(moe_config, name) for name in MOE_FIELDS})
    hc.update({"intermediate_size": cfg.inter_dim, "first_k_dense_replace": cfg.n_dense_layers})
    hc._experts_implementation = "eager"
    layer = DeepseekV3DecoderLayer(hc, layer_idx=layer_id).eval()
    assert isinstance(block.ffn, MoE) == (type(layer.mlp).__name__ == "DeepseekV3MoE")
    with torch.no_grad():
        if isinstance(block.ffn, MoE):
            copy_weights(block.ffn, layer.mlp, torch.Generator().manual_seed(layer_id))
        else:
            for ours_name, hf_name in HF_MLP_NAMES.items():
                getattr(layer.mlp, hf_name).weight.copy_(getattr(block.ffn, ours_name).weight)
    weights = {f"mlp.{name}": value for name, value in layer.mlp.state_dict().items()}
    for name, value in block.attn.state_dict().items():
        module, rest = name.split(".", 1)
        weights[f"self_attn.{HF_NAMES[module]}.{rest}"] = value
    weights.update({"input_layernorm.weight": block.attn_norm.weight,
                    "post_attention_layernorm.weight": block.ffn_norm.weight})
    layer.load_state_dict(weights, strict=True)
    return layer


def hf_forward(cfg, layer_id: int, block: DeepSeekBlock, x: torch.Tensor) -> torch.Tensor:
    """transformers' decoder layer on ``x`` with ``block``'s weights, eager, causal."""
    layer = hf_layer(cfg, layer_id, block)
    b, t, _ = x.shape
    cos, sin = DeepseekV3RotaryEmbedding(layer.self_attn.config)(x, torch.arange(t).expand(b, t))
    return layer(x, attention_mask=causal(t)[None, None], position_embeddings=(cos, sin))


@pytest.mark.parametrize("layer", list(LAYERS))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_capstone_block_matches_transformers_decoder_layer(name, layer):
    cfg, layer_id = tiny(**CONFIGS[name]), LAYERS[layer]
    x, table = inputs(cfg), rope.freqs_cis_from_config(cfg)
    block = ours(cfg, layer_id)
    with torch.no_grad():
        expected = hf_forward(cfg, layer_id, block, x)  # (a MoE block's weights are redrawn here)
        full = block(x, 0, table[:x.shape[1]], causal(x.shape[1]))
        cached = prefill_and_decode(block, x, table)
    print(f"\n{name} {layer}: full {max_diff(full, expected):.1e}, cached decoding {max_diff(cached, expected):.1e} "
          f"(max |out| {expected.abs().max():.2f})")
    assert max_diff(full, expected) <= TOLERANCE
    assert max_diff(cached, expected) <= TOLERANCE


def test_capstone_moe_block_depends_on_the_gate_bias_and_groups():
    """The MoE comparisons are not vacuous: with the weights compared above, the bias and the groups change
    the block's output."""
    cfg, x = tiny(), inputs(tiny())
    table, mask = rope.freqs_cis_from_config(cfg)[:x.shape[1]], causal(x.shape[1])
    block = ours(cfg, 1)
    hf_layer(cfg, 1, block)  # the weights of the comparison
    ungrouped = DeepSeekBlock(1, tiny(n_expert_groups=1, n_limited_groups=1))
    ungrouped.load_state_dict(block.state_dict())
    with torch.no_grad():
        base = block(x, 0, table, mask)
        assert max_diff(ungrouped(x, 0, table, mask), base) > 1e-2
        block.ffn.gate.bias.zero_()
        assert max_diff(block(x, 0, table, mask), base) > 1e-2


# --- DeepSeek-V3's own code ------------------------------------------------------------------------


def add_gate_biases(deepseek, module, cfg):
    """DeepSeek-V3's ``Gate`` makes its bias only when ``dim == 7168``; give the tiny ones theirs."""
    if cfg.gate_bias:
        for gate in [m for m in module.modules() if isinstance(m, deepseek.Gate)]:
            gate.bias = torch.nn.Parameter(torch.zeros(cfg.n_routed_experts))
    return module


@pytest.mark.parametrize("layer", list(LAYERS))
@pytest.mark.parametrize("name", [*CONFIGS, "v2_softmax_gate"])
def test_capstone_block_matches_deepseeks_block(deepseek, name, layer):
    cfg, layer_id = tiny(**(V2_GATE if name == "v2_softmax_gate" else CONFIGS[name])), LAYERS[layer]
    theirs = add_gate_biases(deepseek, deepseek.Block(layer_id, model_args(deepseek, cfg)).float(), cfg)
    mine = ours(cfg, layer_id)
    theirs.load_state_dict(mine.state_dict(), strict=True)  # the same names
    x, table = inputs(cfg), deepseek.precompute_freqs_cis(model_args(deepseek, cfg))
    with torch.no_grad():
        expected, got = prefill_and_decode(theirs, x, table), prefill_and_decode(mine, x, table)
    print(f"\n{name} {layer} ({deepseek.attn_impl} attention): {max_diff(got, expected):.1e}")
    assert max_diff(got, expected) <= TOLERANCE


@pytest.mark.parametrize("name, overrides", [("v3", {}), ("v3_yarn_3_layers", dict(YARN, n_layers=3)),
                                             ("v2_softmax_gate", V2_GATE)])
def test_capstone_model_matches_deepseeks_transformer_and_greedy_generation(deepseek, name, overrides):
    cfg = tiny(**overrides)
    try:
        theirs = deepseek.Transformer(model_args(deepseek, cfg))  # sets Linear.dtype to bfloat16
    finally:
        deepseek.Linear.dtype = torch.float32
    theirs = add_gate_biases(deepseek, theirs.float(), cfg)
    mine = load_weights(TinyDeepSeek(cfg), 99)
    theirs.load_state_dict(mine.state_dict(), strict=True)
    prompt = torch.randint(cfg.vocab_size, (2, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        last = max_diff(mine(prompt)[:, -1], theirs(prompt))  # DeepSeek returns the last position only
    # DeepSeek-V3's generate() at temperature 0: the prompt at once, then one token at a time.
    tokens, prev = prompt, 0
    for cur in range(prompt.shape[1], prompt.shape[1] + 8):
        next_token = theirs(tokens[:, prev:cur], prev).argmax(dim=-1)
        tokens, prev = torch.cat([tokens, next_token[:, None]], dim=1), cur
    generated = mine.generate(prompt, 8)
    print(f"\n{name}: last-position logits {last:.1e}; generated {generated[:, 5:].tolist()}")
    assert last <= TOLERANCE
    assert torch.equal(generated, tokens)
