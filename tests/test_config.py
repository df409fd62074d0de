"""The course config: every field documented, presets with DeepSeek's published numbers."""

import dataclasses
import json
import subprocess

import pytest

from solutions.config import DeepSeekConfig, deepseek_v2, deepseek_v3, tiny

V3_REPO = "/work/.mirror/deepseek-ai+DeepSeek-V3/repo"


def test_every_field_is_documented():
    doc = DeepSeekConfig.__doc__
    for field in dataclasses.fields(DeepSeekConfig):
        assert f"    {field.name} (" in doc, f"{field.name} has no entry in the Attributes section"


def test_tiny_has_distinct_widths_and_yarn_off():
    cfg = tiny()
    # Widths that meet in one tensor differ, so a mixed-up axis shows as a shape error.
    widths = [cfg.dim, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank,
              cfg.q_lora_rank, cfg.inter_dim]
    assert len(set(widths)) == len(widths)
    assert cfg.n_heads not in (cfg.dim, cfg.qk_nope_head_dim, cfg.v_head_dim, cfg.qk_head_dim)
    assert not cfg.yarn_enabled and tiny(max_seq_len=256).yarn_enabled
    assert tiny(q_lora_rank=0).q_lora_rank == 0


@pytest.mark.parametrize("preset, name", [(deepseek_v3, "config_671B.json"), (deepseek_v2, "config_236B.json")])
def test_presets_match_deepseeks_published_configs(preset, name):
    """The DeepSeek-V3 repository's inference configs, field by field (where it is available)."""
    try:
        text = subprocess.run(["git", "-C", V3_REPO, "show", f"HEAD:inference/configs/{name}"],
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("DeepSeek-V3 repository not available")
    published = json.loads(text)
    cfg = preset()
    for key, value in published.items():
        if key != "dtype":
            assert getattr(cfg, key) == value, key
    assert cfg.score_func == published.get("score_func", "softmax")  # ModelArgs' default is softmax
    assert cfg.gate_bias == (cfg.dim == 7168)  # DeepSeek-V3 keys the bias on the width; here it is a flag


def test_published_headline_numbers():
    v3, v2 = deepseek_v3(), deepseek_v2()
    assert (v3.n_routed_experts, v3.n_activated_experts, v3.n_shared_experts, v3.route_scale) == (256, 8, 1, 2.5)
    assert (v2.n_routed_experts, v2.n_activated_experts, v2.n_shared_experts, v2.route_scale) == (160, 6, 2, 16.0)
    assert v3.qk_head_dim == v2.qk_head_dim == 192 and v3.kv_lora_rank == v2.kv_lora_rank == 512
    assert v3.yarn_enabled and v2.yarn_enabled and v3.rope_factor == 40
