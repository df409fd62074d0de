"""Independent proof of fidelity: episodes 16 and 17 against two other implementations of DeepSeek-V3.

* transformers' ``DeepseekV3Attention`` (and its RoPE, YaRN and rotation helpers), built from a tiny
  ``DeepseekV3Config`` with weights copied by name (no download). Its interleaved RoPE returns the
  rotated dims as [evens | odds]; queries and keys are reordered alike, so q·k is unchanged.
* DeepSeek-V3's own ``inference/model.py``, read from a local copy of the official repository
  (``DEEPSEEK_V3_REPO``: a checkout or a bare git mirror); skipped when there is none. Its Triton
  ``kernel`` module is replaced by a stub: with float32 weights it is never called.

Every comparison is float32 and must agree to 5e-5 (the issue's bound); run with ``-s`` to see the
measured differences.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from transformers import DeepseekV3Config
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (DeepseekV3Attention, DeepseekV3RotaryEmbedding,
                                                                  apply_rotary_pos_emb,
                                                                  apply_rotary_pos_emb_interleave)

try:  # transformers >= 5.25 keeps YaRN's mscale with the other RoPE helpers
    from transformers.modeling_rope_utils import yarn_get_mscale
except ImportError:  # 5.24 defines it in the DeepSeek-V3 model file
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import yarn_get_mscale

from autograder.grading import grade_locally
from autograder.probing import load_weights, variant
from autograder.reference import LiveReference
from autograder.registry import load_episode
from solutions import ep16_rope as rope
from solutions.config import deepseek_v3, tiny
from solutions.ep17_mla_rope import MLA

TOLERANCE = 5e-5
YARN = dict(max_seq_len=64, original_seq_len=16, rope_factor=4.0, mscale=0.707)
# Our parameter names → transformers' module names.
HF_NAMES = {"wq_a": "q_a_proj", "q_norm": "q_a_layernorm", "wq_b": "q_b_proj", "wq": "q_proj",
            "wkv_a": "kv_a_proj_with_mqa", "kv_norm": "kv_a_layernorm", "wkv_b": "kv_b_proj", "wo": "o_proj"}
CONFIGS = {"q_lora": {}, "no_q_lora": {"q_lora_rank": 0},
           "q_lora_yarn": YARN, "no_q_lora_yarn": {"q_lora_rank": 0, **YARN}}


def causal(t):
    return torch.full((t, t), float("-inf")).triu(1)


def inputs(cfg, b=3, t=10, seed=5):
    return torch.randn(b, t, cfg.dim, generator=torch.Generator().manual_seed(seed))


def ours(cfg, absorb, seed=123):
    return load_weights(MLA(cfg, absorb=absorb), seed)


def prefill_and_decode(layer, x, table, prompt=4):
    """The first ``prompt`` tokens at once, then one token at a time with the cache."""
    outs = [layer(x[:, :prompt], 0, table[:prompt], causal(prompt))]
    outs += [layer(x[:, i:i + 1], i, table[i:i + 1], None) for i in range(prompt, x.shape[1])]
    return torch.cat(outs, dim=1)


def max_diff(a, b):
    return (a - b).abs().max().item()


# --- transformers -------------------------------------------------------------------------------

def hf_config(cfg) -> DeepseekV3Config:
    """A one-layer transformers config with ``cfg``'s attention; YaRN as DeepSeek-V3 sets it when enabled."""
    rope_parameters = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.yarn_enabled:
        # mscale == mscale_all_dim: no extra factor on cos/sin; the softmax scale gets mscale² (as DeepSeek).
        rope_parameters = {"rope_type": "yarn", "rope_theta": cfg.rope_theta, "factor": cfg.rope_factor,
                           "original_max_position_embeddings": cfg.original_seq_len, "beta_fast": cfg.beta_fast,
                           "beta_slow": cfg.beta_slow, "mscale": cfg.mscale, "mscale_all_dim": cfg.mscale}
    hc = DeepseekV3Config(
        hidden_size=cfg.dim, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads,
        q_lora_rank=cfg.q_lora_rank or None, kv_lora_rank=cfg.kv_lora_rank, qk_nope_head_dim=cfg.qk_nope_head_dim,
        qk_rope_head_dim=cfg.qk_rope_head_dim, v_head_dim=cfg.v_head_dim, max_position_embeddings=cfg.max_seq_len,
        rope_parameters=rope_parameters, rope_interleave=True, attention_bias=False, rms_norm_eps=1e-6,
        num_hidden_layers=1, vocab_size=cfg.vocab_size)
    hc._attn_implementation = "eager"
    return hc


def hf_forward(cfg, layer: MLA, x: torch.Tensor) -> torch.Tensor:
    """transformers' attention on ``x`` with ``layer``'s weights (copied by name), eager, causal."""
    hc = hf_config(cfg)
    attention = DeepseekV3Attention(hc, layer_idx=0).eval()
    weights = {}
    for name, value in layer.state_dict().items():
        module, rest = name.split(".", 1)
        weights[f"{HF_NAMES[module]}.{rest}"] = value
    attention.load_state_dict(weights, strict=True)
    rotary = DeepseekV3RotaryEmbedding(hc)
    assert rotary.attention_scaling == 1.0
    assert attention.scaling == pytest.approx(layer.softmax_scale, rel=1e-12)
    b, t, _ = x.shape
    cos, sin = rotary(x, torch.arange(t).expand(b, t))
    out, _ = attention(x, (cos, sin), causal(t)[None, None])  # eager attention takes an additive mask
    return out


@pytest.mark.parametrize("absorb", [False, True], ids=["naive", "absorbed"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_mla_matches_transformers(name, absorb):
    cfg = tiny(**CONFIGS[name])
    x, table = inputs(cfg), rope.freqs_cis_from_config(cfg)
    with torch.no_grad():
        expected = hf_forward(cfg, ours(cfg, absorb), x)
        full = ours(cfg, absorb)(x, 0, table[:x.shape[1]], causal(x.shape[1]))
        cached = prefill_and_decode(ours(cfg, absorb), x, table)
    print(f"\n{name} {'absorbed' if absorb else 'naive'}: full {max_diff(full, expected):.1e}, "
          f"cached decoding {max_diff(cached, expected):.1e} (max |out| {expected.abs().max():.2f})")
    assert max_diff(full, expected) <= TOLERANCE
    assert max_diff(cached, expected) <= TOLERANCE


def test_yarn_case_is_not_vacuous():
    """With the same weights, YaRN on changes transformers' output (frequencies and scale)."""
    off, on = tiny(), tiny(**YARN)
    with torch.no_grad():
        a, b = hf_forward(off, ours(off, False), inputs(off)), hf_forward(on, ours(on, False), inputs(on))
    assert max_diff(a, b) > 1e-2


def test_rope_layouts_match_transformers_rotate_half_and_interleave():
    d, t = 8, 5
    x = torch.randn(2, t, 3, d, generator=torch.Generator().manual_seed(1))
    table = rope.precompute_freqs_cis(d, t)
    cos = torch.cat([table.real, table.real], dim=-1)[None]  # transformers' (b, t, d) layout
    sin = torch.cat([table.imag, table.imag], dim=-1)[None]
    half, _ = apply_rotary_pos_emb(x, x, cos, sin, unsqueeze_dim=2)
    torch.testing.assert_close(rope.apply_rope_half(x, table.real, table.imag), half)
    interleaved, _ = apply_rotary_pos_emb_interleave(x, x, cos, sin, unsqueeze_dim=2)  # [evens | odds]
    torch.testing.assert_close(rope.apply_rope(x, table)[..., rope.interleaved_to_half_permutation(d)], interleaved)


@pytest.mark.parametrize("args", [(64, 163840, 10000.0, 40.0, 4096, 32, 1), (16, 256, 10000.0, 4.0, 64, 32, 1),
                                  (32, 1024, 50000.0, 8.0, 128, 16, 2)], ids=["deepseek_v3", "d16", "d32"])
def test_yarn_freqs_match_transformers_yarn(args):
    head_dim, seq_len, base, factor, original, beta_fast, beta_slow = args
    hc = DeepseekV3Config(qk_rope_head_dim=head_dim, max_position_embeddings=seq_len, rope_parameters={
        "rope_type": "yarn", "rope_theta": base, "factor": factor, "original_max_position_embeddings": original,
        "beta_fast": beta_fast, "beta_slow": beta_slow, "mscale": 1.0, "mscale_all_dim": 1.0})
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS["yarn"](hc)
    assert attention_factor == 1.0
    torch.testing.assert_close(rope.yarn_freqs(*args), inv_freq, rtol=1e-6, atol=0)


@pytest.mark.parametrize("factor, mscale", [(40.0, 1.0), (40.0, 0.707), (4.0, 0.5), (1.0, 1.0), (0.5, 1.0)])
def test_yarn_mscale_matches_transformers(factor, mscale):
    assert rope.yarn_mscale(factor, mscale) == pytest.approx(yarn_get_mscale(factor, mscale), rel=1e-12)


# --- DeepSeek-V3's own code ----------------------------------------------------------------------

DEEPSEEK_REPO = Path(os.environ.get("DEEPSEEK_V3_REPO", "/work/.mirror/deepseek-ai+DeepSeek-V3/repo"))


def deepseek_source() -> str | None:
    """DeepSeek-V3's ``inference/model.py`` from a checkout or a bare mirror, or None."""
    checkout = DEEPSEEK_REPO / "inference" / "model.py"
    if checkout.exists():
        return checkout.read_text()
    try:
        done = subprocess.run(["git", "-C", str(DEEPSEEK_REPO), "show", "HEAD:inference/model.py"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


@pytest.fixture(scope="module")
def deepseek():
    """DeepSeek-V3's model module, with float32 weights and a stub for its Triton kernels."""
    source = deepseek_source()
    if source is None:
        pytest.skip(f"no DeepSeek-V3 repository at {DEEPSEEK_REPO} (set DEEPSEEK_V3_REPO)")
    stub = types.ModuleType("kernel")
    stub.act_quant = stub.weight_dequant = stub.fp8_gemm = None  # only used for fp8 weights
    saved = sys.modules.get("kernel")
    sys.modules["kernel"] = stub
    try:
        module = types.ModuleType("deepseek_v3_model")
        exec(compile(source, "DeepSeek-V3/inference/model.py", "exec", dont_inherit=True), module.__dict__)
    finally:
        if saved is None:
            sys.modules.pop("kernel")
        else:
            sys.modules["kernel"] = saved
    module.Linear.dtype = torch.float32
    return module


def model_args(deepseek, cfg):
    names = {f.name for f in dataclasses.fields(deepseek.ModelArgs)}
    return deepseek.ModelArgs(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name in names})


@pytest.mark.parametrize("cfg", [tiny(), tiny(**YARN), deepseek_v3()], ids=["tiny", "tiny_yarn", "deepseek_v3"])
def test_freqs_cis_is_deepseeks_precompute_freqs_cis(deepseek, cfg):
    assert torch.equal(rope.freqs_cis_from_config(cfg), deepseek.precompute_freqs_cis(model_args(deepseek, cfg)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_apply_rope_is_deepseeks_apply_rotary_emb(deepseek, dtype):
    x = torch.randn(2, 7, 3, 8, generator=torch.Generator().manual_seed(2)).to(dtype)
    table = rope.precompute_freqs_cis(8, 7)
    assert torch.equal(rope.apply_rope(x, table), deepseek.apply_rotary_emb(x, table))


def test_deepseeks_apply_rotary_emb_gets_full_marks(deepseek):
    """The checks accept DeepSeek-V3's own rotation as a student's apply_rope."""
    episode = load_episode("ep16")
    exercise = next(ex for ex in episode.exercises if ex.name == "apply_rope")
    impl = variant(rope, "apply_rope", deepseek.apply_rotary_emb)
    records = grade_locally(exercise, impl, LiveReference(), 1234)
    assert all(r.passed for r in records), [(r.id, r.message) for r in records if not r.passed]


@pytest.mark.parametrize("absorb", [False, True], ids=["naive", "absorbed"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_mla_matches_deepseek(deepseek, name, absorb):
    cfg = tiny(**CONFIGS[name])
    deepseek.attn_impl = "absorb" if absorb else "naive"  # read by MLA.__init__ and forward
    theirs = deepseek.MLA(model_args(deepseek, cfg))
    mine = ours(cfg, absorb)
    theirs.load_state_dict(mine.state_dict(), strict=True)  # the same names
    x, table = inputs(cfg), deepseek.precompute_freqs_cis(model_args(deepseek, cfg))
    with torch.no_grad():
        expected, got = prefill_and_decode(theirs, x, table), prefill_and_decode(mine, x, table)
    assert theirs.softmax_scale == pytest.approx(mine.softmax_scale, rel=1e-15)
    print(f"\n{name} {deepseek.attn_impl}: {max_diff(got, expected):.1e}")
    assert max_diff(got, expected) <= TOLERANCE
