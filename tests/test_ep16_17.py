"""Conventions and properties of episodes 16 (RoPE, YaRN) and 17 (MLA with decoupled RoPE), on the reference.

Each test states one convention DeepSeek-V3 fixes and checks it against an independent formula
(float64 where the maths is exact) or a property that only a correct implementation has.
Parity with transformers (RoPE layouts, YaRN, MLA) and with DeepSeek-V3's own code is in
``test_parity_mla.py``.
"""

import math

import pytest
import torch

from autograder.probing import load_weights
from solutions import ep16_rope as rope
from solutions.config import deepseek_v2, deepseek_v3, tiny
from solutions.ep17_mla_rope import MLA, mla_cache_bytes_per_token, mla_softmax_scale

YARN = dict(max_seq_len=64, original_seq_len=16, rope_factor=4.0, mscale=0.707)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- ep16: frequencies and tables ------------------------------------------------------------------

@pytest.mark.parametrize("d, base", [(2, 10000.0), (8, 10000.0), (64, 10000.0), (6, 500.0)])
def test_frequencies_are_base_to_the_minus_2i_over_d(d, base):
    expected = torch.tensor([base ** (-2 * i / d) for i in range(d // 2)], dtype=torch.float64)
    got = rope.rope_frequencies(d, base)
    assert got.dtype == torch.float32 and got.shape == (d // 2,)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=0)


def test_table_is_complex64_e_to_the_i_m_theta_with_positions_from_0():
    d, n, base = 8, 10, 100.0
    table = rope.precompute_freqs_cis(d, n, base)
    assert table.dtype == torch.complex64 and table.shape == (n, d // 2)
    m = torch.arange(n, dtype=torch.float64)[:, None]
    theta = torch.tensor([base ** (-2 * i / d) for i in range(d // 2)], dtype=torch.float64)
    torch.testing.assert_close(table.to(torch.complex128), torch.exp(1j * m * theta), atol=1e-6, rtol=0)
    assert torch.equal(table[0], torch.ones(d // 2, dtype=torch.complex64))  # the first token is not rotated


# --- ep16: rotations -------------------------------------------------------------------------------

def test_apply_rope_rotates_interleaved_pairs():
    b, t, h, d = 2, 3, 4, 6
    x = torch.randn(b, t, h, d, dtype=torch.float64, generator=gen())
    table = rope.precompute_freqs_cis(d, t)
    out = rope.apply_rope(x, table)
    assert out.dtype == torch.float64 and out.shape == x.shape
    for m in range(t):
        for i in range(d // 2):
            cos, sin = table[m, i].real.double(), table[m, i].imag.double()
            a, b_ = x[:, m, :, 2 * i], x[:, m, :, 2 * i + 1]
            torch.testing.assert_close(out[:, m, :, 2 * i], a * cos - b_ * sin)
            torch.testing.assert_close(out[:, m, :, 2 * i + 1], a * sin + b_ * cos)


def test_apply_rope_on_bfloat16_rotates_in_float32_and_rounds_once():
    x = torch.randn(2, 6, 3, 8, generator=gen(1)).to(torch.bfloat16)
    table = rope.precompute_freqs_cis(8, 6)
    out = rope.apply_rope(x, table)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, rope.apply_rope(x.float(), table).to(torch.bfloat16))
    # Rotating in bfloat16 arithmetic would round several times and give other values.
    cos, sin = (p.reshape(1, 6, 1, 4).to(torch.bfloat16) for p in (table.real, table.imag))
    a, b = x[..., 0::2], x[..., 1::2]
    in_bf16 = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
    assert not torch.equal(out, in_bf16)


def test_apply_rope_keeps_norms_and_position_0_unchanged():
    x = torch.randn(3, 9, 2, 16, dtype=torch.float64, generator=gen(2))
    out = rope.apply_rope(x, rope.precompute_freqs_cis(16, 9))
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1), rtol=1e-6, atol=0)
    torch.testing.assert_close(out[:, 0], x[:, 0])


def test_scores_after_rope_depend_only_on_the_offset():
    d, n = 16, 20
    table = rope.precompute_freqs_cis(d, n)
    q, k = torch.randn(2, d, dtype=torch.float64, generator=gen(3))

    def at(v, m):
        return rope.apply_rope(v.view(1, 1, 1, d), table[m:m + 1]).flatten()

    for m, n_, shift in [(0, 3, 5), (4, 1, 11), (7, 7, 2)]:
        assert torch.isclose(at(q, m) @ at(k, n_), at(q, m + shift) @ at(k, n_ + shift), atol=1e-5, rtol=0)
    assert not torch.isclose(at(q, 0) @ at(k, 3), at(q, 0) @ at(k, 4), atol=1e-3, rtol=0)


def test_half_split_equals_interleaved_under_the_permutation():
    d = 12
    x = torch.randn(2, 5, 3, d, generator=gen(4))
    table = rope.precompute_freqs_cis(d, 5)
    p = rope.interleaved_to_half_permutation(d)
    assert p.dtype == torch.int64 and sorted(p.tolist()) == list(range(d))
    torch.testing.assert_close(rope.apply_rope_half(x[..., p], table.real, table.imag), rope.apply_rope(x, table)[..., p])
    assert not torch.allclose(rope.apply_rope_half(x, table.real, table.imag), rope.apply_rope(x, table))


# --- ep16: YaRN ------------------------------------------------------------------------------------

DEEPSEEK_V3_YARN = (64, 163840, 10000.0, 40.0, 4096, 32, 1)  # head_dim, seq_len, base, factor, original, betas


def test_yarn_keeps_fast_pairs_interpolates_slow_ones_and_is_off_without_extension():
    head_dim, seq_len, base, factor, original, beta_fast, beta_slow = DEEPSEEK_V3_YARN
    plain = rope.rope_frequencies(head_dim, base)
    stretched = rope.yarn_freqs(*DEEPSEEK_V3_YARN)
    # DeepSeek-V3's ramp: pairs below floor(10.47) kept, from ceil(22.5) on divided by the factor.
    assert torch.equal(stretched[:11], plain[:11])
    torch.testing.assert_close(stretched[23:], plain[23:] / factor)
    assert ((stretched[11:23] < plain[11:23]) & (stretched[11:23] > plain[11:23] / factor)).all()
    assert torch.equal(rope.yarn_freqs(head_dim, original, base, factor, original, beta_fast, beta_slow), plain)


def test_yarn_mscale_formula():
    for factor, m in [(40.0, 1.0), (40.0, 0.707), (4.0, 1.0), (1.0, 1.0), (0.5, 1.0), (16.0, 0.5)]:
        expected = 1.0 if factor <= 1 else 0.1 * m * math.log(factor) + 1.0
        assert rope.yarn_mscale(factor, m) == pytest.approx(expected, rel=1e-12)
    assert rope.yarn_mscale(40.0) == pytest.approx(1.3688879454113936)  # DeepSeek-V3


def test_freqs_cis_from_config_uses_rope_dims_max_seq_len_and_yarn_when_enabled():
    off, on = tiny(), tiny(**YARN)
    assert not off.yarn_enabled and on.yarn_enabled
    t_off, t_on = rope.freqs_cis_from_config(off), rope.freqs_cis_from_config(on)
    assert t_off.shape == (off.max_seq_len, off.qk_rope_head_dim // 2) and t_off.dtype == torch.complex64
    assert torch.equal(t_off, rope.precompute_freqs_cis(off.qk_rope_head_dim, off.max_seq_len, off.rope_theta))
    freqs = rope.yarn_freqs(on.qk_rope_head_dim, on.max_seq_len, on.rope_theta, on.rope_factor, on.original_seq_len,
                            on.beta_fast, on.beta_slow)
    assert torch.equal(t_on, rope.precompute_freqs_cis(on.qk_rope_head_dim, on.max_seq_len, freqs=freqs))
    assert not torch.allclose(t_on, rope.precompute_freqs_cis(on.qk_rope_head_dim, on.max_seq_len))


# --- ep17: MLA -------------------------------------------------------------------------------------

def mla(cfg, absorb, dtype=torch.float32, seed=7):
    return load_weights(MLA(cfg, absorb=absorb), seed).to(dtype)


def causal(t):
    return torch.full((t, t), float("-inf")).triu(1)


def test_parameter_names_and_shapes_follow_deepseek():
    cfg = tiny()
    h, qk, c, r = cfg.n_heads, cfg.qk_head_dim, cfg.kv_lora_rank, cfg.qk_rope_head_dim
    shapes = {n: tuple(p.shape) for n, p in MLA(cfg).named_parameters()}
    assert shapes == {"wq_a.weight": (cfg.q_lora_rank, cfg.dim), "q_norm.weight": (cfg.q_lora_rank,),
                      "wq_b.weight": (h * qk, cfg.q_lora_rank), "wkv_a.weight": (c + r, cfg.dim),
                      "kv_norm.weight": (c,), "wkv_b.weight": (h * (cfg.qk_nope_head_dim + cfg.v_head_dim), c),
                      "wo.weight": (cfg.dim, h * cfg.v_head_dim)}
    no_lora = {n for n, _ in MLA(tiny(q_lora_rank=0)).named_parameters()}
    assert no_lora == {"wq.weight", "wkv_a.weight", "kv_norm.weight", "wkv_b.weight", "wo.weight"}


def test_softmax_scale_counts_rope_dims_and_yarn_mscale_squared():
    assert mla_softmax_scale(tiny()) == pytest.approx(12 ** -0.5)
    m = 0.1 * 0.707 * math.log(4.0) + 1
    assert mla_softmax_scale(tiny(**YARN)) == pytest.approx(12 ** -0.5 * m * m)
    assert mla_softmax_scale(deepseek_v3()) == pytest.approx(192 ** -0.5 * (0.1 * math.log(40) + 1) ** 2)
    assert MLA(tiny(**YARN)).softmax_scale == mla_softmax_scale(tiny(**YARN))


@pytest.mark.parametrize("q_lora_rank", [24, 0])
@pytest.mark.parametrize("yarn", [False, True])
def test_naive_and_absorbed_paths_agree(q_lora_rank, yarn):
    cfg = tiny(q_lora_rank=q_lora_rank, **(YARN if yarn else {}))
    table = rope.freqs_cis_from_config(cfg)
    for dtype, tol in [(torch.float32, 1e-5), (torch.float64, 1e-12)]:
        x = torch.randn(3, 9, cfg.dim, generator=gen(6)).to(dtype)
        naive = mla(cfg, absorb=False, dtype=dtype)(x, 0, table[:9], causal(9))
        absorbed = mla(cfg, absorb=True, dtype=dtype)(x, 0, table[:9], causal(9))
        assert naive.dtype == dtype
        assert (naive - absorbed).abs().max() <= tol


@pytest.mark.parametrize("absorb", [False, True])
def test_bfloat16_layer_stays_bfloat16_and_close_to_float32(absorb):
    """A float32 mask must not promote bfloat16 scores; caches and output stay bfloat16."""
    cfg = tiny()
    table, x = rope.freqs_cis_from_config(cfg)[:6], torch.randn(2, 6, cfg.dim, generator=gen(14))
    layer = mla(cfg, absorb, dtype=torch.bfloat16)
    out = layer(x.to(torch.bfloat16), 0, table, causal(6))
    assert out.dtype == layer.kv_cache.dtype == layer.pe_cache.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), mla(cfg, absorb)(x, 0, table, causal(6)), atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("absorb", [False, True])
def test_cache_holds_only_the_normalised_latent_and_the_rotated_k_pe(absorb):
    cfg = tiny()
    layer = mla(cfg, absorb)
    assert {n: tuple(b.shape) for n, b in layer.named_buffers()} == {
        "kv_cache": (cfg.max_batch_size, cfg.max_seq_len, cfg.kv_lora_rank),
        "pe_cache": (cfg.max_batch_size, cfg.max_seq_len, cfg.qk_rope_head_dim)}
    b, t = 2, 5
    x = torch.randn(b, t, cfg.dim, generator=gen(8))
    table = rope.freqs_cis_from_config(cfg)[:t]
    layer(x, 0, table, causal(t))
    latent, k_pe = layer.wkv_a(x).split([cfg.kv_lora_rank, cfg.qk_rope_head_dim], dim=-1)
    torch.testing.assert_close(layer.kv_cache[:b, :t], layer.kv_norm(latent))
    torch.testing.assert_close(layer.pe_cache[:b, :t], rope.apply_rope(k_pe.unsqueeze(2), table).squeeze(2))
    assert layer.kv_cache[b:].abs().sum() == 0 and layer.kv_cache[:, t:].abs().sum() == 0
    assert not [k for k, v in vars(layer).items() if isinstance(v, torch.Tensor)]


@pytest.mark.parametrize("absorb", [False, True])
@pytest.mark.parametrize("yarn", [False, True])
def test_prefill_then_decoding_equals_the_full_forward(absorb, yarn):
    cfg = tiny(**(YARN if yarn else {}))
    table = rope.freqs_cis_from_config(cfg)
    x = torch.randn(2, 8, cfg.dim, generator=gen(9))
    full = mla(cfg, absorb)(x, 0, table[:8], causal(8))
    layer = mla(cfg, absorb)
    steps = [layer(x[:, :3], 0, table[:3], causal(3))]
    steps += [layer(x[:, i:i + 1], i, table[i:i + 1], None) for i in range(3, 8)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("absorb", [False, True])
def test_outputs_do_not_depend_on_later_tokens(absorb):
    cfg = tiny()
    layer, table = mla(cfg, absorb), rope.freqs_cis_from_config(cfg)[:7]
    x = torch.randn(2, 7, cfg.dim, generator=gen(10))
    changed = x.clone()
    changed[:, 4:] = torch.randn(2, 3, cfg.dim, generator=gen(11))
    torch.testing.assert_close(layer(x, 0, table, causal(7))[:, :4], layer(changed, 0, table, causal(7))[:, :4])


def test_shifting_every_position_leaves_the_output_unchanged():
    """Queries and keys are rotated alike, so only offsets matter: positions k..k+t give the same output as 0..t."""
    cfg = tiny()
    layer, table = mla(cfg, absorb=True), rope.freqs_cis_from_config(cfg)
    x = torch.randn(2, 6, cfg.dim, generator=gen(12))
    torch.testing.assert_close(layer(x, 0, table[:6], causal(6)), layer(x, 0, table[20:26], causal(6)),
                               atol=2e-5, rtol=1e-4)


def test_kv_norm_applies_to_the_latent_only():
    """Scaling the latent rows of wkv_a changes nothing (normalised); scaling the k_pe rows changes the output."""
    cfg = tiny()
    table, x = rope.freqs_cis_from_config(cfg)[:6], torch.randn(2, 6, cfg.dim, generator=gen(13))
    base = mla(cfg, absorb=False)
    out = base(x, 0, table, causal(6))
    for rows, should_change in [(slice(0, cfg.kv_lora_rank), False), (slice(cfg.kv_lora_rank, None), True)]:
        layer = mla(cfg, absorb=False)
        with torch.no_grad():
            layer.wkv_a.weight[rows] *= 3.0
        changed = layer(x, 0, table, causal(6))
        assert torch.allclose(changed, out, atol=1e-5) != should_change


def test_cache_bytes_per_token():
    assert mla_cache_bytes_per_token(deepseek_v3()) == (512 + 64) * 61 * 2 == 70272
    assert mla_cache_bytes_per_token(deepseek_v3(), 1) == 35136
    assert mla_cache_bytes_per_token(deepseek_v2()) == (512 + 64) * 60 * 2
    assert mla_cache_bytes_per_token(tiny(), 4) == (16 + 4) * 2 * 4
    # MHA with the same heads would cache 2·h·(d_nope + d_rope) per token and layer: 85x more for V3.
    cfg = deepseek_v3()
    assert 2 * cfg.n_heads * cfg.qk_head_dim * cfg.n_layers * 2 / mla_cache_bytes_per_token(cfg) == pytest.approx(
        85.33, abs=0.01)
