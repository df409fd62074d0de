"""What the generated notebooks say beyond ``solutions/`` and the registry: learning goals and plots.

This table is the one place for notebook-only content. Titles and video links
come from the registry (``autograder/checks/epNN.py``), the text of each
exercise from its docstring in ``solutions/``; only the learning goals and the
pictures live here. An episode's notebook is built only when the episode exists,
so plot code for later episodes is written against the public API that
``SYLLABUS.md`` fixes and is first run (by the test suite) when the episode lands.

Plot code runs in the notebook's namespace: the episode's own names (the
student's functions and classes), ``torch``, ``given`` and ``when_implemented``
from :mod:`autograder.notebook_api`. It wraps the calls into the student's code
in ``with when_implemented():`` so a notebook whose stubs are still empty runs
from top to bottom with a note instead of a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

GOALS: dict[str, list[str]] = {
    "ep01": ["Count the trainable parameters of a model.",
             "Explain total vs activated parameters of a Mixture-of-Experts model (≈671B / ≈37B for DeepSeek-V3).",
             "Estimate the memory of a KV cache from the layer, head and sequence sizes."],
    "ep02": ["Write a softmax that does not overflow.",
             "Implement RMSNorm in float32 and SiLU, and the SwiGLU feed-forward block w2(silu(w1 x) · w3 x).",
             "Wrap them as modules with DeepSeek's parameter names."],
    "ep03": ["Follow a token from its id through the embedding table to logits.",
             "Compute a numerically stable cross-entropy.",
             "Turn logits into the distribution one samples from, with temperature, top-k and top-p."],
    "ep04": ["Score every token against every token with dot products: x xᵀ.",
             "Turn each query's scores into attention weights with a row softmax.",
             "Build context vectors as attention-weighted sums of the embeddings."],
    "ep05": ["Implement scaled dot-product attention softmax(q kᵀ / √d_k) v for any leading dims.",
             "See why the 1/√d_k scale keeps the softmax from saturating.",
             "Apply a boolean mask (True = blocked) before the softmax.",
             "Build a self-attention layer with trainable query, key and value projections."],
    "ep06": ["Build the causal mask, including the shifted diagonal of cached decoding (s > t).",
             "Apply it so that no token attends to the future, and check it by perturbing the future.",
             "Add dropout on the attention weights in a causal attention layer."],
    "ep07": ["Split the model width into heads and merge them back: (b, t, d_model) ↔ (b, h, t, d).",
             "Run several causal attention heads side by side and concatenate their outputs.",
             "See that different heads learn different attention patterns."],
    "ep08": ["Batch all heads in one set of projections and one attention call.",
             "Show that it equals the wrapper of single heads and PyTorch's scaled_dot_product_attention."],
    "ep09": ["Cache keys and values while decoding one token at a time.",
             "Show that cached decoding equals the full causal forward at every step.",
             "Generate greedily with and without the cache and get the same tokens."],
    "ep10": ["Share one key/value head across all query heads (multi-query attention).",
             "Measure how much smaller the KV cache per token becomes."],
    "ep11": ["Group query heads to share key/value heads (GQA), with MHA and MQA as the two extremes.",
             "Convert an MHA checkpoint to GQA by mean-pooling the key/value heads."],
    "ep12": ["Reproduce DeepSeek-V2's KV-cache table for MHA, GQA, MQA and MLA.",
             "Compress hidden states into a latent and expand it into keys and values.",
             "Absorb the key up-projection into the query so the keys are never materialised."],
    "ep13": ["Implement Multi-head Latent Attention with DeepSeek's parameter names.",
             "Cache only the normalised latent, (b, t, kv_lora_rank).",
             "Show that the absorbed path equals the naive one."],
    "ep14": ["Encode positions as integers and as binary digits.",
             "See why neither is a good input to a network, and add an encoding to embeddings."],
    "ep15": ["Build the sinusoidal positional encoding of 'Attention is all you need'.",
             "Show that a fixed rotation maps PE[p] to PE[p + k] for every p."],
    "ep16": ["Compute RoPE's frequencies and rotate interleaved pairs in float32, as DeepSeek does.",
             "Relate the interleaved layout to the half-split (GPT-NeoX / Llama) layout.",
             "See a vector rotate with its position, fast in the first pairs and slowly in the last."],
    "ep17": ["Add decoupled RoPE to MLA exactly as DeepSeek-V3: a shared rotary key, rope dims last.",
             "Scale by (d_nope + d_rope)^-1/2 and cache only the latent and the rotary key.",
             "Show that the naive and absorbed paths agree."],
    "ep18": ["Build a SwiGLU expert and score experts with a softmax or sigmoid router.",
             "Select the top-k experts per token and combine their outputs.",
             "Contrast a dense soft mixture with sparse routing."],
    "ep19": ["Implement DeepSeek's gate: group-limited routing, route scale and a selection-only bias.",
             "Combine routed experts with a shared expert in a MoE layer.",
             "Count how many tokens each expert receives."],
    "ep20": ["Compute auxiliary balancing losses: importance CV², Switch, DeepSeek-V2 expert and V3 sequence losses.",
             "Apply noisy top-k gating and a capacity limit.",
             "Balance experts without an auxiliary loss by updating the routing bias (DeepSeek-V3)."],
    "capstone": ["Assemble a DeepSeek block: pre-norm MLA attention and a MoE (or dense) feed-forward.",
                 "Stack blocks into a tiny DeepSeek model and generate with the MLA cache.",
                 "Match the reference block stage by stage."],
}


@dataclass(frozen=True)
class Plot:
    """A picture in an episode's notebook, placed after the checks of exercise ``after``."""

    after: str
    title: str
    code: str


PLOTS: dict[str, list[Plot]] = {
    "ep04": [Plot("context_vectors", "Who attends to whom", '''\
import matplotlib.pyplot as plt

# Six tokens with 3-d embeddings, as in the video
tokens = ["Your", "journey", "starts", "with", "one", "step"]
x = torch.tensor([[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
                  [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55]]).unsqueeze(0)
with when_implemented():
    w = attention_weights(attention_scores(x))[0]
    fig, ax = plt.subplots(figsize=(5, 4))
    im = ax.imshow(w.numpy(), cmap="viridis")
    ax.set_xticks(range(len(tokens)), tokens, rotation=45)
    ax.set_yticks(range(len(tokens)), tokens)
    ax.set(xlabel="key", ylabel="query", title="attention weights (each row sums to 1)")
    fig.colorbar(im)
    plt.show()
''')],
    "ep05": [Plot("scaled_dot_product_attention", "Why scale by 1/√d_k", '''\
import matplotlib.pyplot as plt

# With d_k = 64, unscaled dot products are large and the softmax saturates into one-hot rows
torch.manual_seed(0)
d_k = 64
q, k, v = torch.randn(8, d_k), torch.randn(8, d_k), torch.randn(8, d_k)
with when_implemented():
    _, scaled = scaled_dot_product_attention(q, k, v)
    _, unscaled = scaled_dot_product_attention(q * d_k ** 0.5, k, v)  # undoes the 1/√d_k
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
    for ax, w, title in zip(axes, (unscaled, scaled), ("without 1/√d_k", "with 1/√d_k")):
        ax.imshow(w.numpy(), vmin=0, vmax=1, cmap="viridis")
        ax.set(xlabel="key", ylabel="query", title=title)
    plt.show()
''')],
    "ep06": [Plot("causal_attention", "The causal mask and what it does to the weights", '''\
import matplotlib.pyplot as plt

torch.manual_seed(0)
q = k = v = torch.randn(1, 6, 8)
with when_implemented():
    _, w = causal_attention(q, k, v)
    panels = [(causal_mask(6), "causal_mask(6): True = blocked"),
              (w[0], "causal attention weights"),
              (causal_mask(2, 6), "causal_mask(2, 6): 2 new tokens, 6 keys")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for ax, (img, title) in zip(axes, panels):
        cmap = "Greys" if img.dtype == torch.bool else "viridis"
        ax.imshow(img.float().numpy(), vmin=0, vmax=1, cmap=cmap)
        ax.set(xlabel="key", ylabel="query", title=title)
    plt.show()
''')],
    "ep07": [Plot("split_heads", "Each head has its own pattern", '''\
import matplotlib.pyplot as plt

# One projection of width 16 split into 4 heads of width 4: each head attends differently
ep06 = given("ep06_causal_attention")  # causal attention from episode 6
torch.manual_seed(0)
x = torch.randn(1, 6, 16)
W_query, W_key = torch.nn.Linear(16, 16, bias=False), torch.nn.Linear(16, 16, bias=False)
with when_implemented(), torch.no_grad():
    q, k = split_heads(W_query(x), 4), split_heads(W_key(x), 4)  # (1, 4, 6, 4)
    _, w = ep06.causal_attention(q, k, k)
    fig, axes = plt.subplots(1, 4, figsize=(13, 3))
    for head, ax in enumerate(axes):
        ax.imshow(w[0, head].numpy(), vmin=0, vmax=1, cmap="viridis")
        ax.set(xlabel="key", ylabel="query", title=f"head {head}")
    plt.show()
''')],
    "ep12": [Plot("kv_cache_elements_per_token", "KV cache size against sequence length", '''\
import matplotlib.pyplot as plt

# DeepSeek-V2-like sizes: 60 layers, 128 heads of width 128; GQA with 8 groups; MLA with d_c = 512, d_h^R = 64
sizes = dict(n_layers=60, n_heads=128, head_dim=128)
mechanisms = {"mha": {}, "gqa": {"n_groups": 8}, "mqa": {}, "mla": {"kv_lora_rank": 512, "rope_head_dim": 64}}
seq_lens = [1024 * i for i in range(1, 129)]
with when_implemented():
    fig, ax = plt.subplots(figsize=(7, 4))
    for mechanism, extra in mechanisms.items():
        per_token = int(kv_cache_elements_per_token(mechanism, **sizes, **extra))
        gib = [per_token * s * 2 / 2**30 for s in seq_lens]  # bf16: 2 bytes per element, batch 1
        ax.plot(seq_lens, gib, label=f"{mechanism.upper()}: {per_token:,} elements per token")
    ax.set(xlabel="sequence length (tokens)", ylabel="KV cache (GiB, bf16)", yscale="log")
    ax.legend()
    plt.show()
''')],
    "ep15": [Plot("sinusoidal_positional_encoding", "The sinusoidal encoding as a picture", '''\
import matplotlib.pyplot as plt

with when_implemented():
    pe = sinusoidal_positional_encoding(64, 128)
    fig, ax = plt.subplots(figsize=(8, 4))
    im = ax.imshow(pe.numpy(), aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
    ax.set(xlabel="dimension", ylabel="position", title="fast waves in the first dimensions, slow ones in the last")
    fig.colorbar(im)
    plt.show()
''')],
    "ep16": [Plot("apply_rope", "RoPE rotates a vector with its position", '''\
import matplotlib.pyplot as plt

# The same vector at every position; RoPE turns pair i by position × θ_i
head_dim, seq_len = 8, 12
x = torch.tensor([1.0, 0.0] * (head_dim // 2)).repeat(1, seq_len, 1, 1)  # (1, seq_len, 1, head_dim)
with when_implemented():
    freqs_cis = precompute_freqs_cis(head_dim, seq_len)
    rotated = apply_rope(x, freqs_cis)[0, :, 0]  # (seq_len, head_dim)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5))
    for ax, pair in zip(axes, (0, 1, head_dim // 2 - 1)):  # fast, slower, barely moving
        for p in range(seq_len):
            a, b = float(rotated[p, 2 * pair]), float(rotated[p, 2 * pair + 1])
            ax.annotate("", xy=(a, b), xytext=(0, 0),
                        arrowprops=dict(arrowstyle="->", color=plt.cm.viridis(p / seq_len)))
            ax.text(1.1 * a, 1.1 * b, str(p), fontsize=7, ha="center", va="center")
        theta = float(freqs_cis[1, pair].angle())
        ax.set(xlim=(-1.3, 1.3), ylim=(-1.3, 1.3), aspect="equal",
               title=f"pair {pair}: {theta:.3g} rad per position")
    plt.show()
''')],
    "ep20": [Plot("update_routing_bias", "Expert load before and after bias balancing", '''\
import matplotlib.pyplot as plt

# A router that prefers the first experts; the selection-only bias evens out the load
torch.manual_seed(0)
n_experts, top_k, n_tokens = 8, 2, 4096
scores = torch.sigmoid(torch.randn(n_tokens, n_experts) + torch.linspace(1.0, -1.0, n_experts))


def load(bias):
    chosen = (scores + bias).topk(top_k, dim=-1).indices  # the bias changes the selection only
    return torch.bincount(chosen.flatten(), minlength=n_experts).float()


with when_implemented():
    bias = torch.zeros(n_experts)
    before = load(bias)
    for step in range(200):
        bias = update_routing_bias(bias, load(bias), gamma=0.01)
    after = load(bias)
    experts = torch.arange(n_experts).numpy()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(experts - 0.2, before.numpy(), width=0.4, label="before")
    ax.bar(experts + 0.2, after.numpy(), width=0.4, label="after 200 bias updates")
    ax.axhline(n_tokens * top_k / n_experts, color="k", linestyle="--", label="perfect balance")
    ax.set(xlabel="expert", ylabel="tokens routed")
    ax.legend()
    plt.show()
''')],
}
