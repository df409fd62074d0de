"""Checks for episode 16: RoPE frequencies and tables, interleaved and half-split rotations, YaRN."""

import dataclasses
import math

import torch

from ..compare import Tolerance
from ..probing import dtype_of, randn
from ..registry import Episode, case

EPISODE = Episode("ep16", "Rotary Positional Encodings (RoPE)", video="https://youtu.be/a17DlNxkv2k",
                  module="ep16_rope")

# bfloat16 results must be the float32 rotation rounded once: allow one bfloat16 step (2^-7 relative), so
# rotating in bfloat16 arithmetic (several roundings) shows.
BF16_ONE_STEP = {"bfloat16": Tolerance(1e-5, 2.0 ** -7)}


def config(impl, c):
    """The target's ``DeepSeekConfig`` with the case's parameters that are config fields (others are sizes)."""
    fields = {f.name for f in dataclasses.fields(impl.DeepSeekConfig)}
    return impl.DeepSeekConfig(**{k: v for k, v in c.params.items() if k in fields})


def head_slice(x: torch.Tensor, before: int = 4) -> torch.Tensor:
    """The values of ``x`` as the last dims of wider heads, a non-contiguous view like MLA's
    ``q_pe = q[..., nope:]`` (``before`` even, as in DeepSeek, so pairs stay aligned)."""
    wide = torch.zeros(*x.shape[:-1], before + x.shape[-1], dtype=x.dtype)
    wide[..., before:] = x
    return wide[..., before:]


def activations(gen, c):
    """``(b, t, h, d)`` inputs for case ``c`` (dtype, scale and non-contiguity as the case asks)."""
    x = randn(gen, c.b, c.t, c.h, c.d, dtype=dtype_of(c), scale=c.params.get("scale", 1.0))
    return head_slice(x) if c.params.get("noncontiguous") else x


def random_rotations(gen, t, pairs):
    """A ``(t, pairs)`` complex64 table of random unit complex numbers: any rotations are valid inputs."""
    angles = torch.rand(t, pairs, generator=gen, dtype=torch.float64) * 2 * math.pi
    return torch.complex(torch.cos(angles), torch.sin(angles)).to(torch.complex64)


# --- rope_frequencies ------------------------------------------------------------------------------

frequencies = EPISODE.exercise("rope_frequencies")


@frequencies.check(case(head_dim=8), case(head_dim=2), case(head_dim=16, base=500.0), case(head_dim=64))
def frequencies_per_pair(impl, c, gen):
    """θ_i = base^(-2i/d) for each of the d/2 pairs"""
    return impl.rope_frequencies(c.head_dim, c.params.get("base", 10000.0))


@frequencies.check(case(head_dim=12, base=1e6), case(head_dim=128), hidden=True)
def hidden_frequencies(impl, c, gen):
    """other widths and bases"""
    return impl.rope_frequencies(c.head_dim, c.params.get("base", 10000.0))


def _frequencies(exponents, base):
    return 1.0 / (base ** exponents)


@frequencies.misconception("exponent_missing_2", "The exponent is off by a factor 2: pair i has θ_i = base^(-2i/d). "
                           "Use torch.arange(0, d, 2) / d (the even indices over d), not arange(d // 2) / d.")
def _(head_dim, base=10000.0):
    return _frequencies(torch.arange(head_dim // 2, dtype=torch.float32) / head_dim, base)


@frequencies.misconception("exponent_doubled", "The exponent is twice too large: arange(0, d, 2) already counts "
                           "2i, so divide by d, not by d / 2 (θ_i = base^(-2i/d)).")
def _(head_dim, base=10000.0):
    return _frequencies(torch.arange(0, head_dim, 2, dtype=torch.float32) / (head_dim // 2), base)


@frequencies.misconception("not_inverted", "Your frequencies grow with i. θ_i = 1 / base^(2i/d): the first pair "
                           "turns fastest (θ_0 = 1), the last slowest.")
def _(head_dim, base=10000.0):
    return base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)


@frequencies.misconception("one_per_dimension", "There is one frequency per *pair* of dimensions, d/2 in all: "
                           "step the index by 2, torch.arange(0, d, 2).")
def _(head_dim, base=10000.0):
    return _frequencies(torch.arange(head_dim, dtype=torch.float32) / head_dim, base)


# --- precompute_freqs_cis --------------------------------------------------------------------------

table = EPISODE.exercise("precompute_freqs_cis")


@table.check(case(head_dim=8, seq_len=5), case(head_dim=4, seq_len=1), case(head_dim=16, seq_len=12, base=100.0))
def rotation_table(impl, c, gen):
    """complex64 (seq_len, d/2) table of e^(i·m·θ_i) for positions m = 0, 1, …"""
    return impl.precompute_freqs_cis(c.head_dim, c.seq_len, c.params.get("base", 10000.0))


@table.check(case(head_dim=6, seq_len=33), case(head_dim=64, seq_len=7, base=5e5), hidden=True)
def hidden_tables(impl, c, gen):
    """other widths, lengths and bases"""
    return impl.precompute_freqs_cis(c.head_dim, c.seq_len, c.params.get("base", 10000.0))


def _polar(angles):
    return torch.polar(torch.ones_like(angles), angles)


def _reference_frequencies(head_dim, base, freqs):
    from solutions.ep16_rope import rope_frequencies

    return rope_frequencies(head_dim, base) if freqs is None else freqs


@table.misconception("positions_from_1", "Positions start at 0: the first token is not rotated (row 0 is all 1+0j). "
                     "Use torch.arange(seq_len), not arange(1, seq_len + 1).")
def _(head_dim, seq_len, base=10000.0, freqs=None):
    positions = torch.arange(1, seq_len + 1, dtype=torch.float32)
    return _polar(torch.outer(positions, _reference_frequencies(head_dim, base, freqs)))


@table.misconception("transposed", "The table is (positions, pairs): torch.outer(positions, freqs), one row per "
                     "position, so that freqs_cis[start:end] selects tokens.")
def _(head_dim, seq_len, base=10000.0, freqs=None):
    return _polar(torch.outer(_reference_frequencies(head_dim, base, freqs), torch.arange(seq_len, dtype=torch.float32)))


@table.misconception("sin_cos_swapped", "Real and imaginary parts are swapped: e^(iφ) = cos φ + i·sin φ, i.e. "
                     "torch.polar(torch.ones_like(φ), φ).")
def _(head_dim, seq_len, base=10000.0, freqs=None):
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), _reference_frequencies(head_dim, base, freqs))
    return torch.complex(torch.sin(angles), torch.cos(angles))


# --- apply_rope ------------------------------------------------------------------------------------

rope = EPISODE.exercise("apply_rope")


def rotate(impl, c, gen):
    x = activations(gen, c)
    return impl.apply_rope(x, random_rotations(gen, c.t, c.d // 2))


@rope.check(case(b=2, t=5, h=3, d=8), case(b=1, t=1, h=2, d=4), case(b=3, t=4, h=1, d=6), case(b=2, t=3, h=4, d=2))
def random_inputs(impl, c, gen):
    """interleaved pairs (x[2i], x[2i+1]) rotated by freqs_cis[t, i]"""
    return rotate(impl, c, gen)


@rope.check(case(b=2, t=6, h=3, d=8, dtype="bfloat16"), tolerances=BF16_ONE_STEP)
def bfloat16(impl, c, gen):
    """bfloat16 input: rotated in float32, cast back once (bfloat16 output)"""
    return rotate(impl, c, gen)


@rope.check(case(b=2, t=5, h=3, d=8))
def preserves_norms(impl, c, gen):
    """a rotation keeps the norm of every head vector: returns |rope(x)| - |x| (zeros)"""
    x = activations(gen, c)
    return impl.apply_rope(x, random_rotations(gen, c.t, c.d // 2)).norm(dim=-1) - x.norm(dim=-1)


def reference_table(reference, c, gen):
    """The reference's own table for ``c.t`` positions (the property needs real positions)."""
    return reference.precompute_freqs_cis(c.d, c.t)


@rope.check(case(t=12, d=8), case(t=9, d=16), setup=reference_table)
def relative_positions(impl, c, gen, freqs_cis):
    """q·k of a query at m and a key at n depends only on n - m: returns S[m+1, n+1] - S[m, n] (zeros)"""
    q = randn(gen, 1, 1, 1, c.d).repeat(1, c.t, 1, 1)  # the same vector at every position
    k = randn(gen, 1, 1, 1, c.d).repeat(1, c.t, 1, 1)
    scores = impl.apply_rope(q, freqs_cis)[0, :, 0] @ impl.apply_rope(k, freqs_cis)[0, :, 0].T  # (t, t)
    return scores[1:, 1:] - scores[:-1, :-1]


@rope.check(case(b=3, t=7, h=2, d=6, noncontiguous=True), case(b=2, t=3, h=4, d=16, scale=1e4),
            case(b=1, t=9, h=3, d=12, dtype="bfloat16", noncontiguous=True), hidden=True, tolerances=BF16_ONE_STEP)
def hidden_inputs(impl, c, gen):
    """non-contiguous inputs, large magnitudes, non-contiguous bfloat16"""
    return rotate(impl, c, gen)


def _broadcast(table, x):
    """A ``(t, n)`` table viewed as ``(1, t, 1, n)`` against ``(b, t, h, ·)`` inputs."""
    return table.reshape(1, x.shape[1], 1, -1)


@rope.misconception("half_split", "You rotated the half-split pairs (x[i], x[i + d/2]) (GPT-NeoX/Llama layout). "
                    "DeepSeek rotates interleaved pairs (x[2i], x[2i+1]): view the last dim as (d/2, 2).")
def _(x, freqs_cis):
    from solutions.ep16_rope import apply_rope_half

    return apply_rope_half(x, freqs_cis.real, freqs_cis.imag)


@rope.misconception("rotation_backwards", "Your rotation goes the wrong way (by -mθ): multiply by freqs_cis, so "
                    "(a, b) → (a·cos − b·sin, a·sin + b·cos), not by its conjugate.")
def _(x, freqs_cis):
    from solutions.ep16_rope import apply_rope

    return apply_rope(x, freqs_cis.conj())


@rope.misconception("rotated_in_bfloat16", "The rotation was computed in bfloat16, which rounds every product. As "
                    "DeepSeek does, compute in float32 (x.float()) and cast the result back with .to(x.dtype).")
def _(x, freqs_cis):
    cos, sin = _broadcast(freqs_cis.real, x).to(x.dtype), _broadcast(freqs_cis.imag, x).to(x.dtype)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


@rope.misconception("cos_only", "Each dimension was multiplied by cos(mθ) alone. A rotation mixes the two "
                    "dimensions of a pair: (a, b) → (a·cos − b·sin, a·sin + b·cos), i.e. complex multiplication.")
def _(x, freqs_cis):
    cos = _broadcast(freqs_cis.real, x).repeat_interleave(2, dim=-1)
    return (x.float() * cos).to(x.dtype)


# --- apply_rope_half -------------------------------------------------------------------------------

half = EPISODE.exercise("apply_rope_half")


def rotate_half(impl, c, gen):
    x = activations(gen, c)
    f = random_rotations(gen, c.t, c.d // 2)
    return impl.apply_rope_half(x, f.real, f.imag)


@half.check(case(b=2, t=5, h=3, d=8), case(b=1, t=1, h=2, d=4), case(b=3, t=4, h=2, d=6),
            case(b=2, t=3, h=1, d=8, dtype="bfloat16"), tolerances=BF16_ONE_STEP)
def half_split_inputs(impl, c, gen):
    """half-split pairs (x[i], x[i + d/2]) rotated by (cos, sin)[t, i]"""
    return rotate_half(impl, c, gen)


@half.check(case(b=3, t=7, h=2, d=6, noncontiguous=True), case(b=2, t=3, h=4, d=16, scale=1e4),
            case(b=2, t=5, h=3, d=4, dtype="bfloat16", noncontiguous=True), hidden=True, tolerances=BF16_ONE_STEP)
def hidden_half_split_inputs(impl, c, gen):
    """non-contiguous inputs, large magnitudes, bfloat16"""
    return rotate_half(impl, c, gen)


@half.misconception("interleaved", "You rotated interleaved pairs (x[2i], x[2i+1]). The half-split layout pairs "
                    "x[i] with x[i + d/2]: split the last dim into two halves with x.chunk(2, dim=-1).")
def _(x, cos, sin):
    from solutions.ep16_rope import apply_rope

    return apply_rope(x, torch.complex(cos.float(), sin.float()))


@half.misconception("rotation_backwards", "Your rotation goes the wrong way: the first half is x1·cos − x2·sin and "
                    "the second x2·cos + x1·sin (rotate_half(x) = cat(−x2, x1)).")
def _(x, cos, sin):
    from solutions.ep16_rope import apply_rope_half

    return apply_rope_half(x, cos, -sin)


@half.misconception("cos_and_sin_swapped", "cos multiplies x itself and sin its rotated half: x·cos + "
                    "rotate_half(x)·sin, i.e. cat(x1·cos − x2·sin, x2·cos + x1·sin).")
def _(x, cos, sin):
    from solutions.ep16_rope import apply_rope_half

    return apply_rope_half(x, sin, cos)


@half.misconception("halves_not_recombined", "Each half was rotated with only its own values (x1·cos, x2·cos + …). "
                    "Both outputs mix both halves: cat(x1·cos − x2·sin, x2·cos + x1·sin).")
def _(x, cos, sin):
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = _broadcast(cos.float(), x), _broadcast(sin.float(), x)
    return torch.cat([x1 * cos, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


# --- interleaved_to_half_permutation ---------------------------------------------------------------

permutation = EPISODE.exercise("interleaved_to_half_permutation")


@permutation.check(case(head_dim=8), case(head_dim=2), case(head_dim=64))
def permutation_indices(impl, c, gen):
    """the even dimensions, then the odd ones (int64)"""
    return impl.interleaved_to_half_permutation(c.head_dim)


@permutation.check(case(head_dim=6), case(head_dim=128), hidden=True)
def hidden_sizes(impl, c, gen):
    """other widths"""
    return impl.interleaved_to_half_permutation(c.head_dim)


@permutation.misconception("inverse", "That is the inverse permutation (half-split → interleaved). Interleaved pair "
                           "i = (x[2i], x[2i+1]) must land at (i, i + d/2): take the even indices, then the odd.")
def _(head_dim):
    return torch.stack([torch.arange(head_dim // 2), torch.arange(head_dim // 2, head_dim)], dim=-1).flatten()


@permutation.misconception("odds_first", "The odd dimensions came first, which rotates every pair backwards. The "
                           "first half must hold the first element of each pair: the even indices.")
def _(head_dim):
    return torch.cat([torch.arange(1, head_dim, 2), torch.arange(0, head_dim, 2)])


# --- yarn_freqs ------------------------------------------------------------------------------------

yarn = EPISODE.exercise("yarn_freqs")

YARN_ARGS = ("head_dim", "seq_len", "base", "factor", "original_seq_len", "beta_fast", "beta_slow")


def stretched(impl, c):
    return impl.yarn_freqs(*(c.params[k] for k in YARN_ARGS))


@yarn.check(case("deepseek_v3", head_dim=64, seq_len=163840, base=10000.0, factor=40.0, original_seq_len=4096,
                 beta_fast=32, beta_slow=1),
            case("small_d16", head_dim=16, seq_len=256, base=10000.0, factor=4.0, original_seq_len=64,
                 beta_fast=32, beta_slow=1),
            case("not_extended", head_dim=16, seq_len=64, base=10000.0, factor=4.0, original_seq_len=64,
                 beta_fast=32, beta_slow=1),
            case("small_base_clamped", head_dim=16, seq_len=4096, base=10.0, factor=4.0, original_seq_len=1024,
                 beta_fast=32, beta_slow=1))
def stretched_frequencies(impl, c, gen):
    """fast pairs kept, slow pairs divided by factor, a linear ramp between (its slow end clamped to head_dim - 1);
    unchanged if seq_len <= original"""
    return stretched(impl, c)


@yarn.check(case("d32_beta16_2", head_dim=32, seq_len=1024, base=50000.0, factor=8.0, original_seq_len=128,
                 beta_fast=16, beta_slow=2),
            case("d8_short", head_dim=8, seq_len=100, base=10000.0, factor=2.0, original_seq_len=50,
                 beta_fast=32, beta_slow=1), hidden=True)
def hidden_stretches(impl, c, gen):
    """other widths, bases, factors and betas"""
    return stretched(impl, c)


def _yarn(head_dim, seq_len, base, factor, original_seq_len, beta_fast, beta_slow, *, rounded=True,
          reversed_ramp=False, always=False, upper=None, clamped_ramp=True):
    """YaRN with its details as switches (for the variants below); ``upper`` is where the slow end is clamped."""
    from solutions.ep16_rope import rope_frequencies

    freqs = rope_frequencies(head_dim, base)
    if seq_len <= original_seq_len and not always:
        return freqs

    def pair_index(turns):
        return head_dim * math.log(original_seq_len / (turns * 2 * math.pi)) / (2 * math.log(base))

    low, high = pair_index(beta_fast), pair_index(beta_slow)
    if rounded:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1 if upper is None else upper)
    high = high + 0.001 if low == high else high
    ramp = (torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low)
    ramp = ramp.clamp(0, 1) if clamped_ramp else ramp
    if reversed_ramp:
        ramp = 1 - ramp
    return freqs / factor * ramp + freqs * (1 - ramp)


@yarn.misconception("ramp_reversed", "The ramp is reversed: high-frequency pairs (small i, many turns) keep their "
                    "frequency, and low-frequency pairs (large i) are divided by the factor.")
def _(*args):
    return _yarn(*args, reversed_ramp=True)


@yarn.misconception("range_not_rounded", "The ends of the ramp are whole pair indices: floor the fast end and ceil "
                    "the slow end (then clamp to [0, head_dim - 1]), as DeepSeek-V3's find_correction_range does.")
def _(*args):
    return _yarn(*args, rounded=False)


@yarn.misconception("ramp_not_clamped", "Clamp the ramp to [0, 1], ((i - low) / (high - low)).clamp(0, 1): "
                    "pairs before its fast end keep their frequency and pairs after its slow end are divided by the "
                    "factor, instead of being extrapolated beyond them.")
def _(*args):
    return _yarn(*args, clamped_ramp=False)


@yarn.misconception("betas_swapped", "beta_fast (32 in DeepSeek-V3) gives the *fast* end of the ramp, the low pair "
                    "index, and beta_slow (1) the slow end: low = floor(dim(beta_fast)), high = ceil(dim(beta_slow)).")
def _(head_dim, seq_len, base, factor, original_seq_len, beta_fast, beta_slow):
    return _yarn(head_dim, seq_len, base, factor, original_seq_len, beta_slow, beta_fast)


@yarn.misconception("range_not_clamped", "Clamp the slow end of the ramp to head_dim - 1 (min(ceil(...), "
                    "head_dim - 1)), as DeepSeek-V3's find_correction_range does: with a small base or a long "
                    "original context it lies beyond the last dimension.")
def _(*args):
    return _yarn(*args, upper=math.inf)


@yarn.misconception("clamped_to_pairs", "The slow end of the ramp is clamped to head_dim - 1, the last *dimension* "
                    "(as DeepSeek-V3 does), not to head_dim // 2 - 1, the last pair.")
def _(*args):
    return _yarn(*args, upper=args[0] // 2 - 1)


@yarn.misconception("all_interpolated", "Every frequency was divided by the factor (plain position interpolation). "
                    "YaRN keeps the fast pairs, interpolates only the slow ones, and ramps in between.")
def _(head_dim, seq_len, base, factor, original_seq_len, beta_fast, beta_slow):
    from solutions.ep16_rope import rope_frequencies

    return rope_frequencies(head_dim, base) / factor


@yarn.misconception("always_stretched", "YaRN applies only when the context is extended (seq_len > "
                    "original_seq_len); otherwise return the plain RoPE frequencies.")
def _(*args):
    return _yarn(*args, always=True)


# --- yarn_mscale -----------------------------------------------------------------------------------

mscale = EPISODE.exercise("yarn_mscale")


@mscale.check(case(factor=40.0, mscale=1.0), case(factor=40.0, mscale=0.707), case(factor=1.0, mscale=1.0),
              case(factor=0.5, mscale=1.0), case(factor=1.5, mscale=1.0))
def temperature(impl, c, gen):
    """0.1·mscale·ln(factor) + 1, and 1 for factor <= 1"""
    return impl.yarn_mscale(c.factor, c.mscale)


@mscale.check(case(factor=4.0, mscale=1.0), case(factor=16.0, mscale=0.5), case(factor=0.25, mscale=2.0),
              case(factor=2.0, mscale=0.707), hidden=True)
def hidden_temperatures(impl, c, gen):
    """other factors and coefficients"""
    return impl.yarn_mscale(c.factor, c.mscale)


@mscale.misconception("log10", "The logarithm is the natural one: math.log(factor), not math.log10.")
def _(factor, mscale=1.0):
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log10(factor) + 1.0


@mscale.misconception("no_shrink_guard", "For factor <= 1 (no extension) the factor is exactly 1; without the guard "
                      "ln(factor) < 0 would shrink the scores.")
def _(factor, mscale=1.0):
    return 0.1 * mscale * math.log(factor) + 1.0


@mscale.misconception("guard_up_to_2", "Only factor <= 1 means no extension. Any factor above 1, even 1.5 or 2, "
                      "gives 0.1·mscale·ln(factor) + 1 > 1.")
def _(factor, mscale=1.0):
    return 1.0 if factor <= 2 else 0.1 * mscale * math.log(factor) + 1.0


@mscale.misconception("mscale_ignored", "The coefficient mscale multiplies the logarithm: 0.1·mscale·ln(factor) + 1.")
def _(factor, mscale=1.0):
    return 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0


@mscale.misconception("squared", "Return the factor itself; it is the softmax scale (episode 17) that is multiplied "
                      "by its square.")
def _(factor, mscale=1.0):
    return 1.0 if factor <= 1 else (0.1 * mscale * math.log(factor) + 1.0) ** 2


# --- freqs_cis_from_config -------------------------------------------------------------------------

from_config = EPISODE.exercise("freqs_cis_from_config")


@from_config.check(case("yarn_off"), case("yarn_on", max_seq_len=64, original_seq_len=16, rope_factor=4.0),
                   case("rope8_yarn_on", qk_rope_head_dim=8, max_seq_len=40, original_seq_len=8, rope_factor=8.0,
                        rope_theta=1000.0))
def model_table(impl, c, gen):
    """(max_seq_len, qk_rope_head_dim/2) complex64 table, YaRN frequencies when cfg.yarn_enabled"""
    return impl.freqs_cis_from_config(config(impl, c))


@from_config.check(case("rope16_yarn", qk_rope_head_dim=16, max_seq_len=96, original_seq_len=32, rope_factor=16.0,
                        beta_fast=16, beta_slow=2),
                   case("theta_yarn_off", qk_rope_head_dim=6, max_seq_len=20, rope_theta=500.0), hidden=True)
def hidden_model_tables(impl, c, gen):
    """other configs"""
    return impl.freqs_cis_from_config(config(impl, c))


def _table(cfg, dim=None, length=None, yarn=True):
    from solutions.ep16_rope import precompute_freqs_cis, yarn_freqs

    dim, length = dim or cfg.qk_rope_head_dim, length or cfg.max_seq_len
    freqs = None
    if yarn:
        freqs = yarn_freqs(dim, cfg.max_seq_len, cfg.rope_theta, cfg.rope_factor, cfg.original_seq_len,
                           cfg.beta_fast, cfg.beta_slow)
    return precompute_freqs_cis(dim, length, cfg.rope_theta, freqs=freqs)


@from_config.misconception("yarn_ignored", "With cfg.yarn_enabled (max_seq_len > original_seq_len) the frequencies "
                           "are YaRN's: pass yarn_freqs(...) to precompute_freqs_cis.")
def _(cfg):
    return _table(cfg, yarn=False)


@from_config.misconception("whole_head_rotated", "Only the qk_rope_head_dim dims are rotated: the table has "
                           "qk_rope_head_dim // 2 columns, not (qk_nope_head_dim + qk_rope_head_dim) // 2.")
def _(cfg):
    return _table(cfg, dim=cfg.qk_head_dim)


@from_config.misconception("original_length", "The table covers every position the model may see: max_seq_len "
                           "rows, not original_seq_len.")
def _(cfg):
    return _table(cfg, length=cfg.original_seq_len)
