"""Checks for episode 2: softmax, RMSNorm (function and module), SiLU, SwiGLU (function and MLP module)."""

import math

import torch
import torch.nn.functional as F

from ..compare import Tolerance
from ..probing import build, dtype_of, noncontiguous, randn
from ..registry import Episode, case

EPISODE = Episode("ep02", "DeepSeek Basics", video="https://youtu.be/WjhDDeZ7DvM", module="ep02_building_blocks")

# Below half a bfloat16 ulp: the same float32 computation must round to the very same bfloat16 values,
# so computing in bfloat16, or rounding twice, shows.
BF16_EXACT = {"bfloat16": Tolerance(0.0, 2.0**-9)}
# A float64 computation agrees with another to ~1e-15; float32 rounding inside (~1e-7) must show.
F64_EXACT = {"float64": Tolerance(1e-13, 1e-11)}


def inputs(gen, c, *shape, scale=None):
    """Random ``shape`` in the case's dtype, times ``c.scale``, non-contiguous if the case asks."""
    x = randn(gen, *shape, dtype=dtype_of(c), scale=c.params.get("scale", 1.0) if scale is None else scale)
    return noncontiguous(x) if c.params.get("noncontiguous") else x


# --- softmax ----------------------------------------------------------------------------------------

softmax = EPISODE.exercise("softmax")


@softmax.check(case(b=2, t=3, n=5), case(b=1, t=1, n=1), case(b=3, t=2, n=7, dtype="float64"))
def random_rows(impl, c, gen):
    """softmax over the last axis of random (b, t, n) inputs"""
    return impl.softmax(inputs(gen, c, c.b, c.t, c.n, scale=3.0))


@softmax.check(case(b=2, t=4, n=6), case(b=1, t=2, n=3, dtype="float64"))
def shifted_by_1000(impl, c, gen):
    """softmax(x + 1000) must equal softmax(x): no overflow"""
    return impl.softmax(inputs(gen, c, c.b, c.t, c.n) + 1000.0)


@softmax.check(case(b=2, t=3, n=6))
def minus_inf_entries(impl, c, gen):
    """entries equal to -inf (masked) get weight exactly 0"""
    x = inputs(gen, c, c.b, c.t, c.n)
    blocked = torch.rand(c.b, c.t, c.n, generator=gen) < 0.4
    blocked[..., 0] = False  # every row keeps a finite entry
    return impl.softmax(x.masked_fill(blocked, float("-inf")))


@softmax.check(case(b=3, t=4, n=5, dim=1), case(b=2, t=3, n=4, dim=0))
def other_axis(impl, c, gen):
    """softmax along the axis given by dim"""
    return impl.softmax(inputs(gen, c, c.b, c.t, c.n), dim=c.dim)


@softmax.check(case(b=3, t=5, n=4, noncontiguous=True), case(b=2, t=6, n=5, spread=200.0),
               case(b=3, t=2, n=9, spread=300.0, dtype="float64"), hidden=True)
def hidden_rows(impl, c, gen):
    """non-contiguous input; rows hundreds apart from each other"""
    x = inputs(gen, c, c.b, c.t, c.n)
    if "spread" in c.params:
        x = x + randn(gen, c.b, c.t, 1, dtype=x.dtype, scale=c.spread)
    return impl.softmax(x)


@softmax.misconception("naive_exp", "exp(x) overflows to inf for large x (inf/inf = NaN). Subtract each row's "
                       "maximum first: exp(x - x.amax(dim, keepdim=True)); the result does not change.")
def _(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


@softmax.misconception("ignores_dim", "Normalise along the axis the caller passes in dim (max, exp-sum), not "
                       "always the last one.")
def _(x, dim=-1):
    e = torch.exp(x - x.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


@softmax.misconception("sum_over_everything", "Divide by the sum along dim, e.sum(dim=dim, keepdim=True), so that "
                       "each row sums to 1; e.sum() adds up the whole tensor.")
def _(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum()


@softmax.misconception("global_max", "Subtract the maximum of *each row* (amax(dim, keepdim=True)), not of the whole "
                       "tensor: a row far below the global maximum underflows to all zeros (0/0 = NaN).")
def _(x, dim=-1):
    e = torch.exp(x - x.max())
    return e / e.sum(dim=dim, keepdim=True)


# --- rms_norm and RMSNorm -----------------------------------------------------------------------------

rms = EPISODE.exercise("rms_norm")
rms_module = EPISODE.exercise("RMSNorm", method="forward")


def norm_inputs(gen, c):
    """``x`` ``(b, t, dim)`` and a weight ``(dim,)`` around 1, in the case's dtype."""
    return inputs(gen, c, c.b, c.t, c.dim), (1 + randn(gen, c.dim, scale=0.1)).to(dtype_of(c))


def eps_of(c):
    return {"eps": c.eps} if "eps" in c.params else {}


@rms.check(case(b=2, t=5, dim=8), case(b=1, t=1, dim=6), case(b=3, t=4, dim=7, dtype="float64"),
           tolerances=F64_EXACT)
def random_inputs(impl, c, gen):
    """random (b, t, dim) input and weight"""
    return impl.rms_norm(*norm_inputs(gen, c))


@rms.check(case(b=2, t=3, dim=16, dtype="bfloat16"), case(b=3, t=2, dim=10, dtype="bfloat16", scale=40.0),
           tolerances=BF16_EXACT)
def bfloat16_input(impl, c, gen):
    """bfloat16 in, bfloat16 out, computed in float32 (weight applied before casting back)"""
    return impl.rms_norm(*norm_inputs(gen, c))


@rms.check(case(b=2, t=3, dim=5, scale=1e-3, dtype="float64"), case(b=1, t=4, dim=6, scale=3e-3, eps=1e-5,
                                                                     dtype="float64"), tolerances=F64_EXACT)
def tiny_inputs_eps(impl, c, gen):
    """inputs so small that eps matters (eps inside the square root); a custom eps"""
    return impl.rms_norm(*norm_inputs(gen, c), **eps_of(c))


@rms.check(case(b=3, t=6, dim=4, noncontiguous=True), case(b=4, t=2, dim=9, scale=1e4),
           case(b=2, t=5, dim=12, dtype="bfloat16", noncontiguous=True),
           case(b=2, t=3, dim=7, scale=2e-3, eps=1e-4, dtype="float64"),
           tolerances={**BF16_EXACT, **F64_EXACT}, hidden=True)
def hidden_inputs(impl, c, gen):
    """non-contiguous, large and tiny inputs; bfloat16; float64 with a custom eps"""
    return impl.rms_norm(*norm_inputs(gen, c), **eps_of(c))


def module_output(impl, c, gen):
    norm = build(impl.RMSNorm, c.dim, gen=gen, **eps_of(c)).to(dtype_of(c))
    return norm(inputs(gen, c, c.b, c.t, c.dim))


@rms_module.check(case(b=2, t=5, dim=8), case(b=1, t=1, dim=3), case(b=3, t=2, dim=6, dtype="float64"),
                  case(b=2, t=3, dim=16, dtype="bfloat16"), tolerances={**BF16_EXACT, **F64_EXACT})
def forward_random(impl, c, gen):
    """forward with a seeded weight: float32, float64, bfloat16"""
    return module_output(impl, c, gen)


@rms_module.check(case(b=2, t=4, dim=5, scale=1e-3, eps=1e-5, dtype="float64"),
                  case(b=3, t=7, dim=4, noncontiguous=True), case(b=3, t=2, dim=10, dtype="bfloat16", scale=30.0),
                  tolerances={**BF16_EXACT, **F64_EXACT}, hidden=True)
def forward_hidden(impl, c, gen):
    """custom eps on tiny inputs; non-contiguous; large bfloat16"""
    return module_output(impl, c, gen)


def _layer_norm(x, weight, eps=1e-6):
    xw = x.to(torch.promote_types(x.dtype, torch.float32))
    y = (xw - xw.mean(-1, keepdim=True)) * torch.rsqrt(xw.var(-1, unbiased=False, keepdim=True) + eps)
    return (y * weight.to(xw.dtype)).to(x.dtype)


def _eps_outside(x, weight, eps=1e-6):
    xw = x.to(torch.promote_types(x.dtype, torch.float32))
    y = xw / (xw.pow(2).mean(-1, keepdim=True).sqrt() + eps)
    return (y * weight.to(xw.dtype)).to(x.dtype)


def _low_precision(x, weight, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _cast_before_weight(x, weight, eps=1e-6):
    xw = x.to(torch.promote_types(x.dtype, torch.float32))
    return (xw * torch.rsqrt(xw.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


def _always_float32(x, weight, eps=1e-6):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


def _rms(x, weight, eps=1e-6, reduce=torch.mean, weighted=True):
    """The float32 normalisation with the reduction of x² or the weight changed."""
    xw = x.to(torch.promote_types(x.dtype, torch.float32))
    y = xw * torch.rsqrt(reduce(xw.pow(2), dim=-1, keepdim=True) + eps)
    return (y * weight.to(xw.dtype) if weighted else y).to(x.dtype)


def _no_cast_back(x, weight, eps=1e-6):
    xw = x.to(torch.promote_types(x.dtype, torch.float32))
    return xw * torch.rsqrt(xw.pow(2).mean(-1, keepdim=True) + eps) * weight.to(xw.dtype)


RMS_MISCONCEPTIONS = [
    ("layer_norm", "RMSNorm does not subtract the mean: divide x by sqrt(mean(x²) + eps), the root mean "
                   "square, not by the standard deviation.", _layer_norm),
    ("eps_outside_sqrt", "eps goes inside the square root: rsqrt(mean(x²) + eps), not 1 / (sqrt(mean(x²)) + eps).",
     _eps_outside),
    ("low_precision", "The statistics were computed in bfloat16. Upcast first (x.float()), normalise and apply the "
                      "weight in float32, then cast back to x.dtype.", _low_precision),
    ("cast_before_weight", "You cast back to bfloat16 before multiplying by the weight, which rounds twice. As "
                           "DeepSeek-V3 does, multiply by the weight in float32 and cast once at the end.",
     _cast_before_weight),
    ("always_float32", "x.float() rounds a float64 input to float32. Upcast to *at least* float32: "
                       "x.to(torch.promote_types(x.dtype, torch.float32)) keeps float64 exact.", _always_float32),
    ("no_cast_back", "Return the input's dtype: cast the float32 result back with .to(x.dtype).", _no_cast_back),
    ("weight_forgotten", "Multiply the normalised x by the learned weight (elementwise, one scale per feature): "
                         "y = x / rms(x) * weight.", lambda x, weight, eps=1e-6: _rms(x, weight, eps, weighted=False)),
    ("sum_not_mean", "The root mean square averages the squares: mean(x², last axis), i.e. divide their sum by "
                     "dim. Summing makes the output shrink with the width.",
     lambda x, weight, eps=1e-6: _rms(x, weight, eps, reduce=torch.sum)),
]
for _name, _hint, _fn in RMS_MISCONCEPTIONS:
    rms.misconception(_name, _hint)(_fn)
    rms_module.misconception(_name, _hint)(lambda self, x, _fn=_fn: _fn(x, self.weight, self.eps))


# --- silu ---------------------------------------------------------------------------------------------

silu = EPISODE.exercise("silu")


@silu.check(case(b=2, t=3, d=5), case(b=1, t=1, d=1), case(b=3, t=2, d=4, dtype="float64"))
def random_inputs_silu(impl, c, gen):
    """silu of random inputs"""
    return impl.silu(inputs(gen, c, c.b, c.t, c.d, scale=3.0))


@silu.check(case(b=2, t=4, d=3, scale=50.0))
def large_inputs(impl, c, gen):
    """large positive and negative inputs (silu(x) → x and → 0)"""
    return impl.silu(inputs(gen, c, c.b, c.t, c.d))


@silu.check(case(b=3, t=5, d=2, noncontiguous=True), case(b=4, t=2, d=6, scale=500.0, dtype="float64"), hidden=True)
def hidden_inputs_silu(impl, c, gen):
    """non-contiguous; very large float64"""
    return impl.silu(inputs(gen, c, c.b, c.t, c.d))


@silu.misconception("sigmoid_only", "SiLU is x · sigmoid(x); you returned sigmoid(x) alone.")
def _(x):
    return torch.sigmoid(x)


@silu.misconception("sign_flipped", "sigmoid(x) = 1 / (1 + exp(-x)): the exponent is -x. You computed "
                    "x · sigmoid(-x).")
def _(x):
    return x * torch.sigmoid(-x)


@silu.misconception("gelu", "That is GELU. DeepSeek's MLPs use SiLU (swish): x · sigmoid(x).")
def _(x):
    return F.gelu(x)


# --- swiglu and MLP -------------------------------------------------------------------------------------

swiglu = EPISODE.exercise("swiglu")
mlp = EPISODE.exercise("MLP", method="forward")


def swiglu_inputs(gen, c):
    """``x`` ``(b, t, dim)`` and ``w1, w2, w3`` in ``nn.Linear`` layout, in the case's dtype."""
    dtype = dtype_of(c)
    x = inputs(gen, c, c.b, c.t, c.dim)
    w1 = randn(gen, c.inter, c.dim, dtype=dtype, scale=1 / math.sqrt(c.dim))
    w2 = randn(gen, c.dim, c.inter, dtype=dtype, scale=1 / math.sqrt(c.inter))
    w3 = randn(gen, c.inter, c.dim, dtype=dtype, scale=1 / math.sqrt(c.dim))
    return x, w1, w2, w3


@swiglu.check(case(b=2, t=5, dim=4, inter=6), case(b=1, t=1, dim=3, inter=8),
              case(b=3, t=2, dim=5, inter=7, dtype="float64"))
def random_inputs_swiglu(impl, c, gen):
    """w2(silu(w1 x) * w3 x) on random inputs and weights"""
    return impl.swiglu(*swiglu_inputs(gen, c))


@swiglu.check(case(b=3, t=4, dim=6, inter=10, noncontiguous=True), case(b=2, t=3, dim=8, inter=5, scale=20.0),
              hidden=True)
def hidden_inputs_swiglu(impl, c, gen):
    """non-contiguous and large inputs"""
    return impl.swiglu(*swiglu_inputs(gen, c))


def _swiglu(x, gate, up, down, act=F.silu, act_up=lambda u: u, act_after=False):
    """``down(act(gate x) * act_up(up x))``, or ``down(act(gate x * up x))`` with ``act_after``."""
    g, u = x @ gate.T, x @ up.T
    h = act(g * u) if act_after else act(g) * act_up(u)
    return h @ down.T


@swiglu.misconception("w1_w3_swapped", "w1 is the gate (it goes through SiLU) and w3 the up projection: "
                      "w2(silu(w1 x) * w3 x). You gated with w3.")
def _(x, w1, w2, w3):
    return _swiglu(x, w3, w1, w2)


@swiglu.misconception("silu_on_product", "Apply SiLU to the gate only, then multiply: silu(w1 x) * (w3 x), not "
                      "silu(w1 x * w3 x).")
def _(x, w1, w2, w3):
    return _swiglu(x, w1, w3, w2, act_after=True)


@swiglu.misconception("silu_on_both", "Only the gate w1 x goes through SiLU; the up projection w3 x stays linear.")
def _(x, w1, w2, w3):
    return _swiglu(x, w1, w3, w2, act_up=F.silu)


def mlp_output(impl, c, gen):
    layer = build(impl.MLP, c.dim, c.inter, gen=gen).to(dtype_of(c))
    return layer(inputs(gen, c, c.b, c.t, c.dim))


@mlp.check(case(b=2, t=5, dim=4, inter=6), case(b=1, t=1, dim=6, inter=3),
           case(b=3, t=2, dim=5, inter=7, dtype="float64"))
def forward_random_mlp(impl, c, gen):
    """forward with seeded w1, w2, w3"""
    return mlp_output(impl, c, gen)


@mlp.check(case(b=3, t=4, dim=6, inter=10, noncontiguous=True), case(b=2, t=3, dim=8, inter=12, scale=10.0),
           hidden=True)
def forward_hidden_mlp(impl, c, gen):
    """non-contiguous and large inputs"""
    return mlp_output(impl, c, gen)


@mlp.misconception("w1_w3_swapped", "self.w1 is the gate (through SiLU) and self.w3 the up projection: "
                   "self.w2(silu(self.w1(x)) * self.w3(x)).")
def _(self, x):
    return _swiglu(x, self.w3.weight, self.w1.weight, self.w2.weight)


@mlp.misconception("silu_on_product", "Apply SiLU to the gate only: silu(self.w1(x)) * self.w3(x), not "
                   "silu(self.w1(x) * self.w3(x)).")
def _(self, x):
    return _swiglu(x, self.w1.weight, self.w3.weight, self.w2.weight, act_after=True)


@mlp.misconception("no_up_projection", "SwiGLU multiplies the gated branch by a second, linear branch: "
                   "self.w2(silu(self.w1(x)) * self.w3(x)); w3 is missing.")
def _(self, x):
    return self.w2(F.silu(self.w1(x)))
