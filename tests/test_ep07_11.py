"""Conventions and equivalences of episodes 7–11, proven on the reference.

Multi-head attention equals the wrapper of single heads and PyTorch's own
causal attention; cached decoding equals the full forward at every step and
generates the same tokens; GQA is MHA when every head is its own group and
MQA when there is one group, and agrees with PyTorch's ``enable_gqa``; the
cache sizes are DeepSeek-V2's Table 1.
"""

import pytest
import torch
import torch.nn.functional as F

from autograder import registry
from solutions import config
from solutions import ep07_multihead_visual as ep07
from solutions import ep08_multihead_attention as ep08
from solutions import ep09_kv_cache as ep09
from solutions import ep10_multi_query_attention as ep10
from solutions import ep11_grouped_query_attention as ep11

B, T, D_IN, H, HEAD_DIM, CTX = 2, 7, 5, 4, 3, 8  # all different, so axis mistakes show
D_OUT = H * HEAD_DIM


@pytest.fixture(autouse=True)
def _float64_seeded():
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # exact comparisons: differences are bugs, not rounding
    yield
    torch.set_default_dtype(default)


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def heads_of(x, n_heads):
    """``(b, t, h·d)`` → list of the ``h`` feature slices ``(b, t, d)``."""
    return list(x.chunk(n_heads, dim=-1))


# --- ep07: heads ------------------------------------------------------------------------------


def test_split_heads_gives_head_i_the_contiguous_features_i():
    x = torch.randn(B, T, D_OUT)
    heads = ep07.split_heads(x, H)
    assert heads.shape == (B, H, T, HEAD_DIM)
    for i, features in enumerate(heads_of(x, H)):
        assert torch.equal(heads[:, i], features)


def test_merge_heads_inverts_split_heads_also_on_views():
    x = torch.randn(B, T, D_OUT * 2)[..., ::2]  # non-contiguous
    assert torch.equal(ep07.merge_heads(ep07.split_heads(x, H)), x)
    y = torch.randn(B, T, H, HEAD_DIM).transpose(1, 2)  # (b, h, t, d) as attention makes it
    assert torch.equal(ep07.split_heads(ep07.merge_heads(y), H), y)


def test_wrapper_concatenates_its_heads_in_order():
    wrapper = ep07.MultiHeadAttentionWrapper(D_IN, HEAD_DIM, CTX, 0.0, H).eval()
    x = torch.randn(B, T, D_IN)
    out = wrapper(x)
    assert out.shape == (B, T, H * HEAD_DIM)
    for head, features in zip(wrapper.heads, heads_of(out, H)):
        close(features, head(x))


# --- ep08: batched multi-head attention -------------------------------------------------------


def mha_from_wrapper(wrapper):
    """A MultiHeadAttention whose head i has the wrapper's head-i projections and an identity out_proj."""
    mha = ep08.MultiHeadAttention(D_IN, D_OUT, CTX, 0.0, H).eval()
    with torch.no_grad():
        for name in ("W_query", "W_key", "W_value"):
            getattr(mha, name).weight.copy_(torch.cat([getattr(h, name).weight for h in wrapper.heads]))
        mha.out_proj.weight.copy_(torch.eye(D_OUT))
        mha.out_proj.bias.zero_()
    return mha


def test_mha_equals_the_wrapper_with_weights_mapped():
    wrapper = ep07.MultiHeadAttentionWrapper(D_IN, HEAD_DIM, CTX, 0.0, H).eval()
    x = torch.randn(B, T, D_IN)
    close(mha_from_wrapper(wrapper)(x), wrapper(x))


def test_mha_equals_torch_scaled_dot_product_attention():
    mha = ep08.MultiHeadAttention(D_IN, D_OUT, CTX, 0.0, H, qkv_bias=True).eval()
    x = torch.randn(B, T, D_IN)
    q, k, v = (ep07.split_heads(p(x), H) for p in (mha.W_query, mha.W_key, mha.W_value))
    context = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    close(mha(x), mha.out_proj(ep07.merge_heads(context)))


def test_a_check_catches_heads_merged_in_the_wrong_order():
    names = {ex.id: {m.name for m in ex.misconceptions} for ex in registry.load_episode("ep08").exercises}
    assert "merged_without_transpose" in names["ep08.MultiHeadAttention"]
    names = {ex.id: {m.name for m in ex.misconceptions} for ex in registry.load_episode("ep07").exercises}
    assert "reshape_without_transpose" in names["ep07.merge_heads"]
    # that it loses points is proven for every misconception by test_misconceptions.py


# --- ep09: the KV cache ---------------------------------------------------------------------


def test_kv_cache_appends_along_the_sequence_and_resets():
    cache = ep09.KVCache()
    assert cache.seq_len == 0
    k1, v1 = torch.randn(B, H, 3, HEAD_DIM), torch.randn(B, H, 3, HEAD_DIM + 1)
    k2, v2 = torch.randn(B, H, 1, HEAD_DIM), torch.randn(B, H, 1, HEAD_DIM + 1)
    cache.update(k1, v1)
    k_all, v_all = cache.update(k2, v2)
    assert cache.seq_len == 4
    assert torch.equal(k_all, torch.cat([k1, k2], dim=2)) and torch.equal(v_all, torch.cat([v1, v2], dim=2))
    cache.reset()
    assert cache.seq_len == 0
    assert torch.equal(cache.update(k2, v2)[0], k2)


def test_cached_decoding_equals_the_full_forward_at_every_step():
    attn = ep09.CachedMultiHeadAttention(D_IN, D_OUT, CTX, 0.0, H).eval()
    x = torch.randn(B, T, D_IN)
    full, cache = attn(x), ep09.KVCache()
    for i in range(T):
        close(attn(x[:, i:i + 1], cache), full[:, i:i + 1])
        assert cache.seq_len == i + 1


def test_cached_decoding_after_a_prefill_chunk():
    attn = ep09.CachedMultiHeadAttention(D_IN, D_OUT, CTX, 0.0, H).eval()
    x, cache = torch.randn(B, T, D_IN), ep09.KVCache()
    pieces = [attn(x[:, :3], cache), attn(x[:, 3:5], cache), attn(x[:, 5:], cache)]
    close(torch.cat(pieces, dim=1), attn(x))


def test_cached_attention_without_cache_is_episode_8s_attention():
    mha = ep08.MultiHeadAttention(D_IN, D_OUT, CTX, 0.0, H).eval()
    cached = ep09.CachedMultiHeadAttention(D_IN, D_OUT, CTX, 0.0, H).eval()
    cached.load_state_dict(mha.state_dict())
    x = torch.randn(B, T, D_IN)
    close(cached(x), mha(x))


def test_generate_greedy_gives_the_same_tokens_with_and_without_the_cache():
    torch.set_default_dtype(torch.float32)  # as one decodes in practice
    model = ep09.TinyLM(vocab_size=50, d_model=16, context_length=40, num_heads=4).eval()
    prompt, new = torch.randint(50, (3, 5)), 30
    cache = ep09.KVCache()
    with torch.no_grad():
        plain = ep09.generate_greedy(ep09.make_step_fn(model), prompt, new)
        cached = ep09.generate_greedy(ep09.make_step_fn(model, cache), prompt, new)
    assert plain.shape == (3, 5 + new) and torch.equal(plain[:, :5], prompt)
    assert torch.equal(cached, plain)
    assert cache.seq_len == 5 + new - 1  # each token fed once; the last one generated is never fed
    assert len(plain.unique()) > 1


def test_cached_step_feeds_the_prompt_then_one_token():
    model = ep09.TinyLM(vocab_size=20, d_model=8, context_length=10, num_heads=2).eval()
    ids = torch.randint(20, (B, 6))
    step = ep09.make_step_fn(model, ep09.KVCache())
    assert step(ids[:, :4]).shape == (B, 4, 20)
    close(step(ids[:, :5]), model(ids[:, :5])[:, -1:])
    close(step(ids)[:, -1], ep09.make_step_fn(model)(ids)[:, -1])


# --- ep10 / ep11: shared key/value heads ------------------------------------------------------


def test_mqa_is_mha_whose_key_value_heads_are_all_the_shared_head():
    mqa = ep10.MultiQueryAttention(D_IN, D_OUT, H, CTX).eval()
    mha = ep08.MultiHeadAttention(D_IN, D_OUT, CTX, 0.0, H).eval()
    state = dict(mqa.state_dict())
    for name in ("W_key.weight", "W_value.weight"):
        assert state[name].shape == (HEAD_DIM, D_IN)
        state[name] = state[name].repeat(H, 1)
    mha.load_state_dict(state)
    x = torch.randn(B, T, D_IN)
    close(mqa(x), mha(x))


def test_repeat_kv_pairs_head_i_with_group_i_div_n_rep():
    x = torch.randn(B, 3, T, HEAD_DIM)
    out = ep11.repeat_kv(x, 2)
    assert out.shape == (B, 6, T, HEAD_DIM)
    for i in range(6):
        assert torch.equal(out[:, i], x[:, i // 2])
    assert torch.equal(ep11.repeat_kv(x, 1), x)


@pytest.mark.parametrize("groups", [1, 2, H])
def test_gqa_matches_torch_enable_gqa(groups):
    gqa = ep11.GroupedQueryAttention(D_IN, D_OUT, H, groups, CTX, qkv_bias=True).eval()
    x = torch.randn(B, T, D_IN)
    q = ep07.split_heads(gqa.W_query(x), H)
    k, v = (ep07.split_heads(p(x), groups) for p in (gqa.W_key, gqa.W_value))
    context = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    close(gqa(x), gqa.out_proj(ep07.merge_heads(context)))


def test_gqa_with_one_group_per_head_is_mha():
    mha = ep08.MultiHeadAttention(D_IN, D_OUT, CTX, 0.0, H, qkv_bias=True).eval()
    gqa = ep11.GroupedQueryAttention(D_IN, D_OUT, H, H, CTX, qkv_bias=True).eval()
    gqa.load_state_dict(mha.state_dict())
    x = torch.randn(B, T, D_IN)
    close(gqa(x), mha(x))


def test_gqa_with_one_group_is_mqa():
    mqa = ep10.MultiQueryAttention(D_IN, D_OUT, H, CTX).eval()
    gqa = ep11.GroupedQueryAttention(D_IN, D_OUT, H, 1, CTX).eval()
    gqa.load_state_dict(mqa.state_dict())
    x = torch.randn(B, T, D_IN)
    close(gqa(x), mqa(x))


def test_mean_pool_averages_the_consecutive_heads_of_each_group():
    weight = torch.randn(6 * HEAD_DIM, D_IN)
    pooled = ep11.mean_pool_kv_heads(weight, num_heads=6, num_kv_groups=2)
    heads = weight.split(HEAD_DIM)
    assert pooled.shape == (2 * HEAD_DIM, D_IN)
    close(pooled[:HEAD_DIM], sum(heads[:3]) / 3)
    close(pooled[HEAD_DIM:], sum(heads[3:]) / 3)
    close(ep11.mean_pool_kv_heads(weight[:, 0], 6, 2), pooled[:, 0])  # a bias pools the same way


def test_mean_pooled_gqa_equals_an_mha_whose_groups_share_heads():
    """Where the heads of each group already agree, the conversion changes nothing."""
    groups = 2
    mha = ep08.MultiHeadAttention(D_IN, D_OUT, CTX, 0.0, H).eval()
    with torch.no_grad():
        for proj in (mha.W_key, mha.W_value):
            group_heads = torch.randn(groups, 1, HEAD_DIM, D_IN).expand(groups, H // groups, HEAD_DIM, D_IN)
            proj.weight.copy_(group_heads.reshape(D_OUT, D_IN))
    state = dict(mha.state_dict())
    for name in ("W_key.weight", "W_value.weight"):
        state[name] = ep11.mean_pool_kv_heads(state[name], H, groups)
    gqa = ep11.GroupedQueryAttention(D_IN, D_OUT, H, groups, CTX).eval()
    gqa.load_state_dict(state)
    x = torch.randn(B, T, D_IN)
    close(gqa(x), mha(x))


def test_cache_elements_per_token_follow_deepseek_v2_table_1():
    cfg = config.deepseek_v2()
    n_h, d_h, l, n_g = cfg.n_heads, cfg.v_head_dim, cfg.n_layers, 8
    per_token = {m: ep11.kv_cache_elements_per_token(m, l, n_h, d_h, n_groups=n_g) for m in ("mha", "gqa", "mqa")}
    assert per_token == {"mha": 2 * n_h * d_h * l, "gqa": 2 * n_g * d_h * l, "mqa": 2 * d_h * l}
    for m in ("mha", "mqa"):
        assert ep10.kv_cache_elements_per_token(m, l, n_h, d_h) == per_token[m]
    assert ep11.kv_cache_elements_per_token("gqa", l, n_h, d_h, n_groups=n_h) == per_token["mha"]
    assert ep11.kv_cache_elements_per_token("gqa", l, n_h, d_h, n_groups=1) == per_token["mqa"]


def test_cache_elements_reject_unknown_mechanisms():
    with pytest.raises(ValueError):
        ep10.kv_cache_elements_per_token("gqa", 2, 4, 8)
    with pytest.raises(ValueError):
        ep11.kv_cache_elements_per_token("mla", 2, 4, 8)
    with pytest.raises(ValueError):
        ep11.kv_cache_elements_per_token("gqa", 2, 4, 8)


def test_cache_sizes_match_the_modules_parameters():
    """What a layer would cache per token is its key and value projections' output width."""
    for module, m in ((ep08.MultiHeadAttention(D_IN, D_OUT, CTX, 0.0, H), "mha"),
                      (ep10.MultiQueryAttention(D_IN, D_OUT, H, CTX), "mqa"),
                      (ep11.GroupedQueryAttention(D_IN, D_OUT, H, 2, CTX), "gqa")):
        width = module.W_key.out_features + module.W_value.out_features
        assert ep11.kv_cache_elements_per_token(m, 1, H, HEAD_DIM, n_groups=2) == width
