"""Checks for the capstone: DeepSeek-V3's block and a tiny DeepSeek model, assembled from the student's own parts.

The target's block and model are graded twice, with identical (seeded, by name) weights:

* **end to end**: a prompt; a prompt then cached decoding one token at a time (and in chunks);
  ``generate``'s tokens and how it uses the cache;
* **stage by stage, with teacher forcing** (``setup=``, ``stages=True``): ``setup`` runs the *reference*
  on the case's input and records the input and output of every part (forward hooks on the norms, the
  attention and the FFN, and a recorder on the rotations the attention makes). The probe feeds each of the
  target's parts the reference's input of that part and returns ``{stage: output}`` in pipeline order, each
  stage named by the exercise id of the part, e.g. ``ep16.apply_rope (attn)``, so a failure starts with
  ``first differing stage: ep16.apply_rope (attn) (the stages before it match)``. The last stage grades the
  block's (model's) own wiring: its parts are replaced by replays of the reference's outputs, and what each
  part is given and the result are compared. Every stage starts from the reference's values, so small
  differences cannot add up along the pipeline and be blamed on a later part; a part that uses another
  (MLA uses apply_rope and RMSNorm) comes after it.
"""

import contextlib
import sys

import torch

from ..probing import build, load_weights, randint
from ..registry import Episode, case
from .ep02 import BF16_EXACT
from .ep16 import config
from .ep17 import OTHER_DIMS, YARN, causal_mask, rope_table, tokens
from .ep18 import routing
from .ep19 import OTHER, V2

EPISODE = Episode("capstone", "Capstone: a DeepSeek block from your own parts", video="", module="capstone")

# Other sizes everywhere at once: 3 heads, other head dims, 12 experts in 3 groups, 2 shared, 3 layers.
OTHER_MODEL = dict(OTHER_DIMS, **OTHER, q_lora_rank=9, inter_dim=28, vocab_size=53, n_layers=3, n_dense_layers=2)


def chunks(c):
    """``(start, end)`` of the first ``c.prefill`` tokens, then of every ``c.step`` (default 1) tokens up to ``c.t``."""
    bounds = [0, *range(c.prefill, c.t, c.params.get("step", 1)), c.t]
    return list(zip(bounds, bounds[1:]))


# --- teacher forcing: the reference's input of every part --------------------------------------------


@contextlib.contextmanager
def recorded_rotations(block):
    """Records the arguments of every ``apply_rope`` call the (reference) block's attention makes.

    The attention's episode module looks ``apply_rope`` up by name at each call; it is wrapped for the
    duration of the ``with`` and restored afterwards.
    """
    module = sys.modules[type(block.attn).__module__]
    original, calls = module.apply_rope, []

    def record(x, freqs_cis):
        calls.append([x.clone(), freqs_cis.clone()])
        return original(x, freqs_cis)

    module.apply_rope = record
    try:
        yield calls
    finally:
        module.apply_rope = original


def trace_block(block, x, start_pos, table):
    """Runs the reference ``block`` on ``x`` (new tokens at ``start_pos``) and returns the input and output of each part.

    Returns:
        dict: ``x`` (b, t, dim) the block's input; ``attn_in`` attn_norm's output (MLA's input);
        ``rotations`` the ``[x, freqs_cis]`` of each ``apply_rope`` call; ``attn_out`` MLA's output;
        ``h`` the stream after the attention (ffn_norm's input); ``ffn_in`` ffn_norm's output (the FFN's
        input); ``ffn_out`` the FFN's output; ``out`` the block's output.
    """
    seen = {}

    def keep(*names):
        return lambda module, args, out: seen.update(zip(names, (args[0], out)))

    hooks = [block.attn_norm.register_forward_hook(keep("x", "attn_in")),
             block.attn.register_forward_hook(keep("attn_in", "attn_out")),
             block.ffn_norm.register_forward_hook(keep("h", "ffn_in")),
             block.ffn.register_forward_hook(keep("ffn_in", "ffn_out"))]
    t = x.shape[1]
    try:
        with recorded_rotations(block) as rotations:
            seen["out"] = block(x, start_pos, table[start_pos:start_pos + t], causal_mask(t, start_pos))
    finally:
        for hook in hooks:
            hook.remove()
    return {**seen, "rotations": rotations}


def block_inputs(reference, c, gen):
    """Teacher forcing for one block: its weights' seed, the RoPE rows, and the reference input of every part.

    With ``c.prefill``, the first ``prefill`` tokens go through the reference first (filling its cache) and
    the parts are traced on the remaining tokens at ``start_pos = prefill``; ``prefix_attn_in`` is what the
    reference's attention got for the prefix.
    """
    cfg = config(reference, c)
    seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
    block = load_weights(reference.DeepSeekBlock(c.layer_id, cfg), seed)
    table, x, p = rope_table(reference, c, gen), tokens(reference, c, gen), c.params.get("prefill", 0)
    given = {"seed": seed, "freqs_cis": table[:c.t]}
    if p:
        given["prefix_attn_in"] = trace_block(block, x[:, :p], 0, table)["attn_in"]
    return {**given, **trace_block(block, x[:, p:], p, table)}


def model_inputs(reference, c, gen):
    """Teacher forcing for the model: its weights' seed, the tokens, and the reference input of every part.

    Returns:
        dict: ``seed``, ``tokens`` (b, t), ``freqs_cis`` the reference's RoPE rows, ``layers`` one
        :func:`trace_block` per block (its ``out`` is the next one's ``x``).
    """
    cfg = config(reference, c)
    seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
    model = load_weights(reference.TinyDeepSeek(cfg), seed)
    ids = randint(gen, cfg.vocab_size, c.b, c.t)
    layers, x = [], model.embed(ids)
    for layer in model.layers:
        layers.append(trace_block(layer, x, 0, model.freqs_cis))
        x = layers[-1]["out"]
    return {"seed": seed, "tokens": ids, "freqs_cis": model.freqs_cis[:c.t], "layers": layers}


# --- stages -------------------------------------------------------------------------------------------


def ffn_stages(ffn, x, moe, where=""):
    """The feed-forward parts on the reference's FFN input ``x``: gate, experts, shared MLP, MoE (or the MLP)."""
    if not moe:
        return {f"ep02.MLP ({where}ffn)": ffn(x)}
    flat = x.reshape(-1, x.shape[-1])
    return {f"ep19.Gate ({where}ffn.gate)": routing(ffn.gate(flat)),
            f"ep18.Expert ({where}ffn.experts)": torch.stack([expert(flat) for expert in ffn.experts]),
            f"ep02.MLP ({where}ffn.shared_experts)": ffn.shared_experts(x),
            f"ep19.MoE ({where}ffn)": ffn(x)}


class Replay(torch.nn.Module):
    """Stands in for a part of the target: returns the reference's output of that part and records its inputs
    (named as in the part's ``forward``)."""

    def __init__(self, output, *names):
        super().__init__()
        self.output, self.names, self.calls = output, names, []

    def forward(self, *args, **kwargs):
        self.calls.append({**dict(zip(self.names, args)), **kwargs})
        return self.output


BLOCK_ARGS = ("x", "start_pos", "freqs_cis", "mask")


def assembly(module, parts, *args):
    """Runs ``module`` with some submodules replaced by :class:`Replay` s of the reference's outputs.

    This grades the module's own wiring on exact reference values: what each part is given, and the output.

    Args:
        module: The target's block or model (changed in place).
        parts (dict): ``{name: (reference output, argument names)}``; ``name`` is an attribute, or a
            dotted path into a ModuleList such as ``"layers.0"``.
        *args: The module's inputs.

    Returns:
        dict: ``output``, and ``"<part> got"``: the inputs of every call of each part.
    """
    replays = {name: Replay(out, *names) for name, (out, names) in parts.items()}
    for name, replay in replays.items():
        owner, _, attr = name.rpartition(".")
        setattr(module.get_submodule(owner) if owner else module, attr, replay)
    return {"output": module(*args), **{f"{name} got": replay.calls for name, replay in replays.items()}}


def block_stages(block, given, moe, start_pos=0, where=""):
    """Each part of the target's ``block`` on the reference's input of that part, in pipeline order.

    The rotations use the ``apply_rope`` the target's attention uses. With ``start_pos > 0`` the target's
    attention first caches the reference's prefix input, so the ``ep17.MLA`` stage is cached decoding.
    The last stage is the block's own wiring, with every part replaced by the reference's output.
    """
    t = given["x"].shape[1]
    freqs_cis, mask = given["freqs_cis"][start_pos:start_pos + t], causal_mask(t, start_pos)
    rope = sys.modules[type(block.attn).__module__].apply_rope
    stages = {f"ep02.RMSNorm ({where}attn_norm)": block.attn_norm(given["x"]),
              f"ep16.apply_rope ({where}attn)": [rope(x, f) for x, f in given["rotations"]]}
    if start_pos:
        block.attn(given["prefix_attn_in"], 0, given["freqs_cis"][:start_pos], causal_mask(start_pos))
    stages[f"ep17.MLA ({where}attn)"] = block.attn(given["attn_in"], start_pos, freqs_cis, mask)
    stages[f"ep02.RMSNorm ({where}ffn_norm)"] = block.ffn_norm(given["h"])
    stages.update(ffn_stages(block.ffn, given["ffn_in"], moe, where))
    stages[f"capstone.DeepSeekBlock ({where}residuals)"] = block_wiring(block, given, start_pos, freqs_cis, mask)
    return stages


def block_wiring(block, given, start_pos, freqs_cis, mask, dtype=None):
    """The target's block forward with its four parts replayed from the reference (cast to ``dtype``)."""
    cast = (lambda v: v.to(dtype)) if dtype else (lambda v: v)
    parts = {"attn_norm": (cast(given["attn_in"]), ["x"]), "attn": (cast(given["attn_out"]), BLOCK_ARGS),
             "ffn_norm": (cast(given["ffn_in"]), ["x"]), "ffn": (cast(given["ffn_out"]), ["x"])}
    return assembly(block, parts, cast(given["x"]), start_pos, freqs_cis, mask)


def mask_of(impl, t, start_pos):
    """The target's additive mask; None (DeepSeek's for one token) counts as the all-zero ``(t, start_pos + t)``."""
    mask = impl.additive_causal_mask(t, start_pos)
    return torch.zeros(t, start_pos + t) if mask is None else mask


# --- additive_causal_mask ---------------------------------------------------------------------------------

mask_ex = EPISODE.exercise("additive_causal_mask")


@mask_ex.check(case(t=5), case(t=1, start_pos=4), case(t=3, start_pos=4))
def masks(impl, c, gen):
    """(t, start_pos + t) float: 0 up to each new token's own position, -inf after; None (or zeros) for t = 1"""
    return mask_of(impl, c.t, c.params.get("start_pos", 0))


@mask_ex.check(case(t=6, start_pos=2), case(t=1), case(t=2, start_pos=9), hidden=True)
def hidden_masks(impl, c, gen):
    """other lengths and offsets"""
    return mask_of(impl, c.t, c.params.get("start_pos", 0))


def _blocked(t, s, diagonal):
    return torch.zeros(t, s).masked_fill(torch.ones(t, s, dtype=torch.bool).triu(diagonal), float("-inf"))


@mask_ex.misconception("diagonal_blocked", "A token may attend to itself: block only the keys strictly after "
                       "its position (triu(start_pos + 1)); blocking the diagonal leaves the first token nothing.")
def _(seqlen, start_pos=0):
    return None if seqlen == 1 else _blocked(seqlen, start_pos + seqlen, start_pos)


@mask_ex.misconception("boolean_mask", "MLA *adds* the mask to its scores: return a float tensor, 0 where a query "
                       "may look and -inf where it may not (e.g. zeros(...).masked_fill(blocked, float('-inf'))), "
                       "not episode 6's boolean mask.")
def _(seqlen, start_pos=0):
    from solutions.ep06_causal_attention import causal_mask as blocked

    return None if seqlen == 1 else blocked(seqlen, start_pos + seqlen)


@mask_ex.misconception("ignores_start_pos", "With tokens already cached the scores are (t, start_pos + t): every new "
                       "token also sees the start_pos cached ones, and new token i sits at position start_pos + i. "
                       "DeepSeek-V3's (t, t) triu(1) is only right for a prompt at start_pos = 0.")
def _(seqlen, start_pos=0):
    return None if seqlen == 1 else _blocked(seqlen, seqlen, 1)


# --- DeepSeekBlock ----------------------------------------------------------------------------------------

block_ex = EPISODE.exercise("DeepSeekBlock", method="forward")


def make_block(impl, c, gen):
    return build(impl.DeepSeekBlock, c.layer_id, config(impl, c), gen=gen)


@block_ex.check(case("moe_b2_t5", b=2, t=5, layer_id=1),
                case("dense_no_q_lora_b3_t6", b=3, t=6, layer_id=0, q_lora_rank=0),
                case("moe_decode_b2_t6_prefill5", b=2, t=6, prefill=5, layer_id=1),
                case("small_activations_moe_b2_t5", b=2, t=5, layer_id=1, scale=1e-3),
                points=2, setup=block_inputs, stages=True)
def stages(impl, c, gen, given):
    """each part on the reference's input of that part (norms, rotations, MLA, gate, experts, MoE), then the wiring"""
    block = load_weights(impl.DeepSeekBlock(c.layer_id, config(impl, c)), given["seed"])
    return block_stages(block, given, c.layer_id >= config(impl, c).n_dense_layers, c.params.get("prefill", 0))


@block_ex.check(case("b2_t5", b=2, t=5, layer_id=1), setup=block_inputs, stages=True, tolerances=BF16_EXACT)
def bfloat16_norms_and_residuals(impl, c, gen, given):
    """bfloat16 activations: the norms computed in float32 and rounded once, the residual sums in bfloat16"""
    block = load_weights(impl.DeepSeekBlock(c.layer_id, config(impl, c)), given["seed"]).to(torch.bfloat16)
    bf16 = torch.bfloat16
    return {"ep02.RMSNorm (attn_norm)": block.attn_norm(given["x"].to(bf16)),
            "ep02.RMSNorm (ffn_norm)": block.ffn_norm(given["h"].to(bf16)),
            "capstone.DeepSeekBlock (residuals)": block_wiring(block, given, 0, given["freqs_cis"][:c.t],
                                                               causal_mask(c.t), dtype=bf16)}


@block_ex.check(case("moe_b2_t5", b=2, t=5, layer_id=1), case("dense_b2_t5", b=2, t=5, layer_id=0),
                case("moe_no_q_lora_b3_t6", b=3, t=6, layer_id=1, q_lora_rank=0),
                case("moe_b3_t1", b=3, t=1, layer_id=1), setup=rope_table)
def prefill(impl, c, gen, freqs_cis):
    """the whole block on a prompt (start_pos 0, causal mask): MoE and dense blocks, with and without q_lora"""
    return make_block(impl, c, gen)(tokens(impl, c, gen), 0, freqs_cis[:c.t], causal_mask(c.t))


def decode(impl, c, gen, freqs_cis):
    layer, x = make_block(impl, c, gen), tokens(impl, c, gen)
    return torch.cat([layer(x[:, s:e], s, freqs_cis[s:e], causal_mask(e - s, s)) for s, e in chunks(c)], dim=1)


@block_ex.check(case("moe_b2_t7_prefill3", b=2, t=7, prefill=3, layer_id=1),
                case("dense_no_q_lora_b3_t5_prefill2", b=3, t=5, prefill=2, layer_id=0, q_lora_rank=0),
                setup=rope_table)
def cached_decoding(impl, c, gen, freqs_cis):
    """a prompt, then one token at a time at start_pos (mask None): the outputs of every position"""
    return decode(impl, c, gen, freqs_cis)


@block_ex.check(case("other_sizes_moe", b=2, t=5, layer_id=2, **OTHER_MODEL),
                case("yarn_softmax_gate", b=2, t=6, layer_id=1, **YARN, **V2),
                case("noncontiguous_large_moe", b=3, t=4, layer_id=1, noncontiguous=True, scale=8.0),
                hidden=True, setup=rope_table)
def hidden_prefill(impl, c, gen, freqs_cis):
    """other sizes, YaRN with DeepSeek-V2's softmax gate, non-contiguous large inputs"""
    return prefill(impl, c, gen, freqs_cis)


@block_ex.check(case("chunks_of_2_moe", b=2, t=8, prefill=3, step=2, layer_id=1),
                case("yarn_dense", b=1, t=6, prefill=4, layer_id=0, **YARN), hidden=True, setup=rope_table)
def hidden_decoding(impl, c, gen, freqs_cis):
    """decoding in chunks of 2 (mask (t, start_pos + t)), YaRN"""
    return decode(impl, c, gen, freqs_cis)


@block_ex.check(case("other_sizes_chunk", b=3, t=5, prefill=3, layer_id=2, **OTHER_MODEL),
                case("yarn_softmax_gate", b=2, t=6, layer_id=1, q_lora_rank=0, **YARN, **V2),
                case("small_activations_dense", b=2, t=4, layer_id=0, scale=2e-3),
                hidden=True, points=2, setup=block_inputs, stages=True)
def hidden_stages(impl, c, gen, given):
    """stage by stage: other sizes while decoding a chunk, YaRN with a softmax gate, small activations"""
    return stages(impl, c, gen, given)


def _block(self, x, start_pos, freqs_cis, mask, post_norm=False, attn_residual=True, parallel=False,
           normed_residual=False, shared_norm=False, ffn_residual=True):
    """The reference block with one thing changed (for the misconceptions below)."""
    attend = (lambda v: self.attn(v, start_pos, freqs_cis, mask))
    ffn_norm = self.attn_norm if shared_norm else self.ffn_norm
    if post_norm:
        h = self.attn_norm(x + attend(x))
        return ffn_norm(h + self.ffn(h))
    normed = self.attn_norm(x)
    h = (normed if normed_residual else x if attn_residual else 0) + attend(normed)
    return (h if ffn_residual else 0) + self.ffn(ffn_norm(x if parallel else h))


BLOCK_MISCONCEPTIONS = [  # (name, hint, what _block changes)
    ("post_norm", "DeepSeek's block is *pre*-norm: normalise each sub-layer's input and add its output to the "
                  "un-normalised stream, h = x + attn(attn_norm(x), …), out = h + ffn(ffn_norm(h)); not "
                  "attn_norm(x + attn(x, …)) as in the original Transformer.", {"post_norm": True}),
    ("attention_residual_missing", "Add the attention's output to the block's input: h = x + attn(attn_norm(x), …). "
                                   "Without the residual the stream loses x.", {"attn_residual": False}),
    ("ffn_residual_missing", "Add the feed-forward output to the stream as well: out = h + ffn(ffn_norm(h)). "
                             "Without this second residual the block returns only the FFN's output.",
     {"ffn_residual": False}),
    ("parallel_ffn", "The feed-forward network reads the stream *after* the attention: ffn(ffn_norm(h)) with "
                     "h = x + attn(…), not ffn(ffn_norm(x)) of the block's input.", {"parallel": True}),
    ("residual_of_normed_input", "The residual carries the block's raw input x, not its normalised copy: "
                                 "h = x + attn(attn_norm(x), …).", {"normed_residual": True}),
    ("attn_norm_twice", "Each sub-layer has its own norm: ffn_norm (its own weight) before the feed-forward "
                        "network, attn_norm before the attention.", {"shared_norm": True}),
]
for _name, _hint, _change in BLOCK_MISCONCEPTIONS:
    block_ex.misconception(_name, _hint)(
        lambda self, x, start_pos, freqs_cis, mask, _change=_change: _block(self, x, start_pos, freqs_cis, mask,
                                                                             **_change))


# --- TinyDeepSeek -------------------------------------------------------------------------------------------

model_ex = EPISODE.exercise("TinyDeepSeek", method="forward")


def make_model(impl, c, gen):
    model = build(impl.TinyDeepSeek, config(impl, c), gen=gen)
    return model, randint(gen, model.head.out_features, c.b, c.t)


@model_ex.check(case(b=2, t=5), case("no_q_lora_b3_t6", b=3, t=6, q_lora_rank=0), points=2, setup=model_inputs,
                stages=True)
def model_stages(impl, c, gen, given):
    """the RoPE table, the mask, every part of every block on the reference's input, the final norm, the wiring"""
    cfg = config(impl, c)
    model = load_weights(impl.TinyDeepSeek(cfg), given["seed"])
    found = {"ep16.freqs_cis_from_config (freqs_cis)": model.freqs_cis,
             "capstone.additive_causal_mask (mask)": mask_of(impl, c.t, 0)}
    layers = given["layers"]
    for i, layer in enumerate(model.layers):
        found.update(block_stages(layer, {**layers[i], "freqs_cis": given["freqs_cis"]}, i >= cfg.n_dense_layers,
                                  where=f"layers.{i}."))
    found["ep02.RMSNorm (norm)"] = model.norm(layers[-1]["out"])
    parts = {f"layers.{i}": (trace["out"], BLOCK_ARGS) for i, trace in enumerate(layers)}
    found["capstone.TinyDeepSeek (forward)"] = assembly(model, parts, given["tokens"])
    return found


@model_ex.check(case(b=2, t=5), case(b=3, t=1), case("no_q_lora_b2_t6", b=2, t=6, q_lora_rank=0))
def logits(impl, c, gen):
    """forward(tokens): (b, t, vocab_size) logits of every position (one dense and one MoE block)"""
    model, ids = make_model(impl, c, gen)
    return model(ids)


def model_decode(impl, c, gen):
    model, ids = make_model(impl, c, gen)
    return torch.cat([model(ids[:, s:e], s) for s, e in chunks(c)], dim=1)


@model_ex.check(case(b=2, t=7, prefill=3), case("no_q_lora_b3_t5_prefill1", b=3, t=5, prefill=1, q_lora_rank=0))
def cached_decoding_logits(impl, c, gen):
    """forward(prompt, 0), then forward(one token, start_pos): the logits of every position"""
    return model_decode(impl, c, gen)


@model_ex.check(case(b=2, t=5, new=6), case(b=1, t=1, new=5), points=2)
def generate(impl, c, gen):
    """generate(prompt, max_new_tokens): the prompt followed by the greedy tokens, (b, t + max_new_tokens) int64"""
    model, ids = make_model(impl, c, gen)
    return model.generate(ids, c.new)


@model_ex.check(case(b=2, t=3, new=4))
def generate_uses_cache(impl, c, gen):
    """the (new tokens, start_pos) each forward pass of generate feeds the blocks: the prompt, then one token"""
    model, ids = make_model(impl, c, gen)
    calls = []

    def record(module, args, kwargs):
        x, start_pos = [*args, *kwargs.values()][:2]
        calls.append([x.shape[1], int(start_pos)])

    model.layers[0].register_forward_pre_hook(record, with_kwargs=True)
    model.generate(ids, c.new)
    return torch.tensor(calls[:c.new], dtype=torch.int64).reshape(-1, 2)


@model_ex.check(case("yarn_softmax_gate", b=2, t=6, **YARN, **V2), case("other_sizes_3_layers", b=2, t=5, **OTHER_MODEL),
                hidden=True)
def hidden_logits(impl, c, gen):
    """YaRN with a softmax gate; other sizes with three blocks"""
    return logits(impl, c, gen)


@model_ex.check(case("chunks_of_2", b=2, t=8, prefill=3, step=2), case("yarn", b=1, t=6, prefill=2, **YARN),
                hidden=True)
def hidden_decoding_logits(impl, c, gen):
    """a prompt fed in chunks of 2 (mask (t, start_pos + t)); YaRN"""
    return model_decode(impl, c, gen)


@model_ex.check(case("softmax_gate", b=3, t=5, new=8, **V2), case("other_sizes", b=2, t=2, new=6, **OTHER_MODEL),
                hidden=True, points=2)
def hidden_generate(impl, c, gen):
    """longer generations, other configs"""
    return generate(impl, c, gen)


@model_ex.check(case("yarn_softmax_gate", b=2, t=6, **YARN, **V2), case("other_sizes_3_layers", b=2, t=4, **OTHER_MODEL),
                hidden=True, points=2, setup=model_inputs, stages=True)
def hidden_model_stages(impl, c, gen, given):
    """stage by stage: YaRN with a softmax gate; other sizes with three blocks"""
    return model_stages(impl, c, gen, given)


def _forward(self, ids, start_pos=0, rows_from_start=False, mask=True, norm=True, last=False):
    """The reference forward with one thing changed (for the misconceptions below)."""
    from solutions.capstone import additive_causal_mask

    t = ids.shape[1]
    h = self.embed(ids)
    freqs_cis = self.freqs_cis[:t] if rows_from_start else self.freqs_cis[start_pos:start_pos + t]
    m = additive_causal_mask(t, start_pos) if mask else None
    for layer in self.layers:
        h = layer(h, start_pos, freqs_cis, m)
    out = self.head(self.norm(h) if norm else h)
    return out[:, -1] if last else out


MODEL_MISCONCEPTIONS = [  # (name, hint, what _forward changes)
    ("last_position_only", "Return the logits of every position, (b, t, vocab_size): this course grades all of "
                           "them. (DeepSeek-V3's Transformer returns only logits[:, -1]; generate takes the last "
                           "row itself.)", {"last": True}),
    ("no_final_norm", "Normalise the last block's output with self.norm before the head: logits = head(norm(h)).",
     {"norm": False}),
    ("rope_rows_from_zero", "The new tokens sit at positions start_pos … start_pos + t - 1: take the RoPE rows "
                            "self.freqs_cis[start_pos:start_pos + t], not [:t].", {"rows_from_start": True}),
    ("no_mask", "A prompt needs the causal mask (additive_causal_mask(t, start_pos)): without it every token "
                "attends to the tokens after it.", {"mask": False}),
]
for _name, _hint, _change in MODEL_MISCONCEPTIONS:
    model_ex.misconception(_name, _hint)(
        lambda self, tokens, start_pos=0, _change=_change: _forward(self, tokens, start_pos, **_change))


def _generate(self, prompt_ids, max_new_tokens, cached=True, offset=0, with_prompt=True):
    """The reference generate with one thing changed (for the misconceptions below)."""
    ids, new, start_pos = prompt_ids, prompt_ids, 0
    for _ in range(max_new_tokens):
        logits = self(new, start_pos) if cached else self(ids, 0)
        start_pos += new.shape[1] + offset
        new = logits[:, -1].argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, new], dim=1)
    return ids if with_prompt else ids[:, prompt_ids.shape[1]:]


GENERATE_MISCONCEPTIONS = [  # (name, hint, what _generate changes)
    ("recomputes_without_cache", "generate should use the MLA cache: feed the prompt once, then only the newest "
                                 "token at start_pos = tokens already cached. Re-running the whole sequence every "
                                 "step gives the same tokens at O(t²) cost.", {"cached": False}),
    ("start_pos_off_by_one", "After the prompt of t tokens, the first new token is at position t (start_pos = t), "
                             "the next at t + 1: start_pos is the number of tokens already cached.", {"offset": 1}),
    ("new_tokens_only", "Return the prompt followed by the new tokens, (b, t + max_new_tokens), as episode 9's "
                        "generate_greedy does.", {"with_prompt": False}),
]
for _name, _hint, _change in GENERATE_MISCONCEPTIONS:
    model_ex.misconception(_name, _hint, method="generate")(
        lambda self, prompt_ids, max_new_tokens, _change=_change: _generate(self, prompt_ids, max_new_tokens,
                                                                            **_change))
