"""Conventions and equivalences of episodes 12–15, proven on the reference.

ep12: DeepSeek-V2's Table 1 (and MLA = GQA with 2.25 groups), the paper's
compression and expansion, and absorption equal to expanding the keys/values.
ep13: the layer equals transformers' ``DeepseekV3Attention`` (RoPE width 0) with
weights mapped by name; absorbed equals naive; prefill then cached decoding
equals the full forward; only the normalised latent is cached. ep14: integer and
binary tables (least significant bit first). ep15: sin at even, cos at odd
columns, and ``PE[p + k] = M · PE[p]`` for every ``p`` in float64.
"""

import math

import pytest
import torch

from autograder.checks.ep12 import forms_per_head_tensor
from solutions import config
from solutions import ep12_mla_theory as ep12
from solutions import ep13_mla as ep13
from solutions import ep14_integer_binary_pe as ep14
from solutions import ep15_sinusoidal_pe as ep15

B, T, S, H, D, C = 2, 3, 7, 4, 5, 6  # all different, so axis mistakes show


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


# --- ep12: the cache table ---------------------------------------------------------------------------


def test_table_1_formulas():
    l, n_h, d_h, n_g, d_c, d_r = 3, 8, 6, 2, 20, 4
    f = ep12.kv_cache_elements_per_token
    assert f("mha", l, n_h, d_h) == 2 * n_h * d_h * l
    assert f("gqa", l, n_h, d_h, n_groups=n_g) == 2 * n_g * d_h * l
    assert f("mqa", l, n_h, d_h) == 2 * d_h * l
    assert f("mla", l, n_h, d_h, kv_lora_rank=d_c, rope_head_dim=d_r) == (d_c + d_r) * l
    assert f("mla", l, 2 * n_h, d_h, kv_lora_rank=d_c, rope_head_dim=d_r) == (d_c + d_r) * l  # head-independent
    assert f("gqa", l, n_h, d_h, n_groups=n_h) == f("mha", l, n_h, d_h)
    assert f("gqa", l, n_h, d_h, n_groups=1) == f("mqa", l, n_h, d_h)


@pytest.mark.parametrize("head_dim", [2, 64, 128])
def test_mla_with_v2_ratios_equals_gqa_with_2_25_groups(head_dim):
    f = ep12.kv_cache_elements_per_token
    mla = f("mla", 60, 128, head_dim, kv_lora_rank=4 * head_dim, rope_head_dim=head_dim // 2)
    assert mla == f("gqa", 60, 128, head_dim, n_groups=2.25) == 4.5 * head_dim * 60


def test_deepseek_v2_cache_ratio():
    cfg = config.deepseek_v2()
    f = ep12.kv_cache_elements_per_token
    mha = f("mha", cfg.n_layers, cfg.n_heads, cfg.qk_nope_head_dim)
    mla = f("mla", cfg.n_layers, cfg.n_heads, cfg.qk_nope_head_dim, kv_lora_rank=cfg.kv_lora_rank,
            rope_head_dim=cfg.qk_rope_head_dim)
    assert (mha, mla) == (2 * 128 * 128 * 60, 576 * 60)
    assert mla / mha == pytest.approx(576 / 32768)  # 1.76 %


@pytest.mark.parametrize("mechanism, kwargs, named", [
    ("gqa", {}, "n_groups"), ("mla", {"rope_head_dim": 4}, "kv_lora_rank"),
    ("mla", {"kv_lora_rank": 16}, "rope_head_dim"), ("MHA", {}, "unknown mechanism"),
])
def test_missing_arguments_raise_a_value_error_naming_them(mechanism, kwargs, named):
    with pytest.raises(ValueError, match=named):
        ep12.kv_cache_elements_per_token(mechanism, 2, 4, 8, **kwargs)


# --- ep12: compression, expansion, absorption ------------------------------------------------------------


def test_compress_and_expand_are_the_papers_linear_maps():
    h = randn(B, S, 10)
    down, up_k, up_v = (torch.nn.Linear(10, C, bias=False).double(), torch.nn.Linear(C, H * D, bias=False).double(),
                        torch.nn.Linear(C, H * 3, bias=False).double())
    c = ep12.compress_kv(h, down.weight)
    torch.testing.assert_close(c, down(h))
    k, v = ep12.expand_kv(c, up_k.weight, up_v.weight, H)
    assert k.shape == (B, S, H, D) and v.shape == (B, S, H, 3)
    for j in range(H):  # head j is rows j·d … (j+1)·d − 1 of the weight
        torch.testing.assert_close(k[:, :, j], c @ up_k.weight[j * D:(j + 1) * D].T)
        torch.testing.assert_close(v[:, :, j], c @ up_v.weight[j * 3:(j + 1) * 3].T)


def test_absorbed_scores_and_context_equal_the_expanded_ones():
    q, c, w_uk, w_uv = randn(B, T, H, D, seed=1), randn(B, S, C, seed=2), randn(H * D, C, seed=3), randn(H * 3, C, seed=4)
    k, v = ep12.expand_kv(c, w_uk, w_uv, H)
    scores = ep12.absorbed_scores(q, c, w_uk)
    torch.testing.assert_close(scores, torch.einsum("bthd,bshd->bths", q, k), atol=1e-12, rtol=1e-10)
    weights = scores.softmax(dim=-1)
    torch.testing.assert_close(ep12.absorbed_context(weights, c, w_uv), torch.einsum("bths,bshd->bthd", weights, v),
                               atol=1e-12, rtol=1e-10)


def test_the_materialisation_probe_flags_expanded_keys_only():
    """The helper behind the 'never formed' checks: silent for absorption, loud for expanded keys."""
    q, c, w_uk = randn(B, 1, H, D, seed=1), randn(B, S, C, seed=2), randn(H * D, C, seed=3)
    threshold = B * S * H * D
    _, absorbed = forms_per_head_tensor(lambda: ep12.absorbed_scores(q, c, w_uk), [q, c, w_uk], threshold)
    _, expanded = forms_per_head_tensor(lambda: ep12.expand_kv(c, w_uk, w_uk, H), [q, c, w_uk], threshold)
    assert not absorbed and expanded


# --- ep13: the layer --------------------------------------------------------------------------------------

D_MODEL, RANK, Q_RANK = 16, 6, 5


def make_mla(q_lora_rank=0, seed=0, **kwargs):
    torch.manual_seed(seed)
    layer = ep13.MultiHeadLatentAttention(D_MODEL, H, D, RANK, q_lora_rank, **kwargs).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0.0, 1.0 / math.sqrt(p.shape[-1]) if p.dim() > 1 else 0.1).add_(0 if p.dim() > 1 else 1.0)
    return layer


@pytest.mark.parametrize("q_lora_rank", [0, Q_RANK])
def test_parameters_have_deepseeks_names_and_shapes(q_lora_rank):
    shapes = {n: tuple(p.shape) for n, p in make_mla(q_lora_rank).named_parameters()}
    query = ({"wq.weight": (H * D, D_MODEL)} if q_lora_rank == 0 else
             {"wq_a.weight": (Q_RANK, D_MODEL), "q_norm.weight": (Q_RANK,), "wq_b.weight": (H * D, Q_RANK)})
    assert shapes == {**query, "wkv_a.weight": (RANK, D_MODEL), "kv_norm.weight": (RANK,),
                      "wkv_b.weight": (H * 2 * D, RANK), "wo.weight": (D_MODEL, H * D)}


@pytest.mark.parametrize("q_lora_rank", [0, Q_RANK])
def test_equals_transformers_deepseek_v3_attention_without_rope(q_lora_rank):
    """Independent fidelity: transformers' MLA with a zero-width RoPE part, weights mapped by name."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Attention

    hf_cfg = transformers.DeepseekV3Config(
        hidden_size=D_MODEL, num_attention_heads=H, num_key_value_heads=H, q_lora_rank=q_lora_rank or None,
        kv_lora_rank=RANK, qk_nope_head_dim=D, qk_rope_head_dim=0, v_head_dim=D, attention_bias=False)
    hf_cfg._attn_implementation = "eager"
    hf = DeepseekV3Attention(hf_cfg, layer_idx=0).eval()
    ours = make_mla(q_lora_rank)
    names = {"wq": "q_proj", "wq_a": "q_a_proj", "q_norm": "q_a_layernorm", "wq_b": "q_b_proj",
             "wkv_a": "kv_a_proj_with_mqa", "kv_norm": "kv_a_layernorm", "wkv_b": "kv_b_proj", "wo": "o_proj"}
    hf.load_state_dict({names[k.split(".")[0]] + ".weight": v for k, v in ours.state_dict().items()}, strict=True)
    x = torch.randn(B, 5, D_MODEL, generator=gen(1))
    causal = torch.full((5, 5), float("-inf")).triu(1).expand(B, 1, 5, 5)  # eager attention needs it explicitly
    no_rope = torch.zeros(B, 5, 0)
    with torch.no_grad():
        expected = hf(x, (no_rope, no_rope), causal)[0]
        for absorb in (False, True):
            ours.absorb = absorb
            torch.testing.assert_close(ours(x), expected, atol=5e-6, rtol=1e-5)


def max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("q_lora_rank", [0, Q_RANK])
def test_absorbed_equals_naive_in_float32(q_lora_rank):
    layer, x = make_mla(q_lora_rank), torch.randn(3, 9, D_MODEL, generator=gen(2))
    with torch.no_grad():
        naive = layer(x)
        layer.absorb = True
        absorbed = layer(x)
    assert max_diff(naive, absorbed) <= 1e-5


@pytest.mark.parametrize("absorb", [False, True])
@pytest.mark.parametrize("chunks", [[4, 1, 1, 1, 1], [1] * 6, [3, 2, 1]])
def test_prefill_then_decoding_equals_the_full_forward(absorb, chunks):
    layer, x = make_mla(Q_RANK, absorb=absorb), torch.randn(B, sum(chunks), D_MODEL, generator=gen(3))
    with torch.no_grad():
        full = layer(x)
        pieces, start = [], 0
        for t in chunks:
            pieces.append(layer(x[:, start:start + t], start))
            start += t
    assert max_diff(torch.cat(pieces, dim=1), full) <= 1e-5


def test_prefill_then_decoding_is_exact_in_float64():
    layer, x = make_mla(absorb=True).double(), randn(B, 6, D_MODEL, seed=4)
    with torch.no_grad():
        full = layer(x)
        steps = torch.cat([layer(x[:, :3])] + [layer(x[:, p:p + 1], p) for p in range(3, 6)], dim=1)
    torch.testing.assert_close(steps, full, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("absorb", [False, True])
def test_cache_holds_only_the_normalised_latent(absorb):
    layer, x = make_mla(absorb=absorb, max_batch_size=3, max_seq_len=10), torch.randn(B, 5, D_MODEL, generator=gen(5))
    with torch.no_grad():
        layer(x)
        expected = layer.kv_norm(layer.wkv_a(x))
    assert {n: tuple(b.shape) for n, b in layer.named_buffers()} == {"kv_cache": (3, 10, RANK)}
    assert "kv_cache" not in layer.state_dict()
    torch.testing.assert_close(layer.kv_cache[:B, :5], expected)
    assert layer.kv_cache[:B, 5:].abs().sum() == 0 and layer.kv_cache[B:].abs().sum() == 0


def test_absorbed_decoding_forms_no_per_head_keys_but_naive_does():
    results = {}
    for absorb in (False, True):
        layer, x = make_mla(absorb=absorb), torch.randn(B, 9, D_MODEL, generator=gen(6))
        with torch.no_grad():
            layer(x[:, :8])
            existing = [x, *layer.parameters(), *layer.buffers()]
            _, results[absorb] = forms_per_head_tensor(lambda: layer(x[:, 8:], 8), existing, B * 9 * H * D)
    assert results == {False: True, True: False}


def test_output_does_not_depend_on_later_tokens():
    layer, x = make_mla(absorb=True), torch.randn(B, 6, D_MODEL, generator=gen(7))
    y = x.clone()
    y[:, 3:] += 5.0
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[:, :3], layer(y)[:, :3])


# --- ep14 ---------------------------------------------------------------------------------------------------


def test_integer_encoding_fills_row_p_with_p():
    pe = ep14.integer_positional_encoding(6, 3)
    assert pe.dtype == torch.float32 and pe.shape == (6, 3)
    assert all((pe[p] == p).all() for p in range(6))


def test_binary_encoding_is_least_significant_bit_first():
    pe = ep14.binary_positional_encoding(40, 5)
    assert pe.dtype == torch.float32 and pe.shape == (40, 5)
    for p in range(40):
        bits = format(p % 32, "05b")[::-1]  # Python writes the most significant bit first
        assert pe[p].tolist() == [float(b) for b in bits]
    assert pe[6].tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]  # 6 = 0b110


def test_add_positional_encoding_uses_the_first_rows_and_keeps_the_dtype():
    x, pe = randn(B, 4, 3, dtype=torch.float32), randn(9, 3)
    out = ep14.add_positional_encoding(x, pe)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x + pe[:4].float())


# --- ep15 ---------------------------------------------------------------------------------------------------


def test_sinusoidal_encoding_has_sin_at_even_and_cos_at_odd_columns():
    seq_len, d, base = 11, 8, 10000.0
    pe = ep15.sinusoidal_positional_encoding(seq_len, d, base, dtype=torch.float64)
    for p in range(seq_len):
        for i in range(d // 2):
            angle = p / base ** (2 * i / d)  # "Attention is all you need", section 3.5
            assert pe[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-15)
            assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-15)
    assert ep15.sinusoidal_positional_encoding(seq_len, d).dtype == torch.float32


@pytest.mark.parametrize("k", [0, 1, 3, 17, -5])
def test_relative_matrix_shifts_every_position_in_float64(k):
    d, n = 12, 40
    pe = ep15.sinusoidal_positional_encoding(n + abs(k), d, dtype=torch.float64)
    m = ep15.relative_position_matrix(k, d, dtype=torch.float64)
    p = torch.arange(n) + max(-k, 0)
    torch.testing.assert_close(pe[p + k], pe[p] @ m.T, atol=1e-13, rtol=0)


def test_relative_matrix_is_block_diagonal_rotations():
    d = 10
    m = ep15.relative_position_matrix(4, d, 100.0, dtype=torch.float64)
    block = torch.ones(2, 2, dtype=torch.bool)
    assert (m[~torch.block_diag(*[block] * (d // 2))] == 0).all()
    torch.testing.assert_close(m @ m.T, torch.eye(d, dtype=torch.float64))
    torch.testing.assert_close(m.T, ep15.relative_position_matrix(-4, d, 100.0, dtype=torch.float64))
    torch.testing.assert_close(ep15.relative_position_matrix(1, d, 100.0, dtype=torch.float64) @
                               ep15.relative_position_matrix(3, d, 100.0, dtype=torch.float64), m)
