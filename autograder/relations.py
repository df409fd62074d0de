"""What a wrong result *is*, relative to the expected one: generic detectors run when a check fails.

A misconception names a catalogued bug; these detectors name a relation, whatever the bug: the
result is the expected one times a constant (√d, 2, 1/T…) or with the sign flipped, with axes
permuted, with the pairs of the last axis in the other layout (interleaved vs half-split), shifted
by one position, right for the first k positions only (a cache or ``start_pos`` problem), right only
to float32 (or half) precision, or right but of the wrong dtype. A relation names how the result is
wrong, as a misconception's hint does, so it is shown for hidden checks too; there, a factor that is
not a familiar one (2, √d, 1/T…) is not printed, since with their own output it would hand a student
the expected values.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np

from .compare import agrees
from .values import Array

MAX_ELEMENTS = 1 << 20  # relations are looked for on small results only: they cost a few passes each


def relations(expected, got, tolerances: dict | None = None, path: str = "output", hidden: bool = False) -> list[str]:
    """One sentence per array of ``got`` that differs from its expected array in a known relation.

    Args:
        expected: The reference's plain result.
        got: The target's plain result (same structure where it matters).
        tolerances: The check's tolerances: arrays that agree within them are left alone.
        path: Name of the result, for the sentence.
        hidden: A hidden check's result: no number taken from the expected values.

    Returns:
        list[str]: Sentences such as ``"weights: equals the expected result × 2"``.
    """
    found: list[str] = []
    if isinstance(expected, Array) and isinstance(got, Array):
        sentence = None if agrees(expected, got, tolerances) else describe(expected, got, hidden)
        if sentence:
            found.append(f"{path}: {sentence}")
    elif isinstance(expected, dict) and isinstance(got, dict):
        for key in expected:
            if key in got:
                found += relations(expected[key], got[key], tolerances, key if path == "output" else f"{path}.{key}",
                                   hidden)
    elif isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got):
        for i, (e, g) in enumerate(zip(expected, got)):
            found += relations(e, g, tolerances, f"{path}[{i}]", hidden)
    return found


def describe(exp: Array, got: Array, hidden: bool = False) -> str | None:
    """The first relation ``got`` stands in to ``exp``, as a sentence, or None (``hidden``: see :func:`relations`)."""
    e, g = exp.data, got.data
    if e.size == 0 or e.size > MAX_ELEMENTS or g.size > MAX_ELEMENTS or e.dtype.kind not in "fc" \
            or g.dtype.kind not in "fcbiu" or not (np.isfinite(e).all() and np.isfinite(g).all()):
        return None
    e, g = e.astype(np.complex128 if e.dtype.kind == "c" else np.float64), g.astype(np.float64 if g.dtype.kind != "c"
                                                                                     else np.complex128)
    factor = functools.partial(_factor, hidden=hidden)
    for detector in (_dtype_only, _precision, factor, _permuted_axes, _pair_layout, _shift, _prefix):
        sentence = detector(e, g, exp, got)
        if sentence:
            return sentence
    return None


def _close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-4) -> bool:
    """Equal up to a small relative error, measured on the scale of the whole array."""
    if a.shape != b.shape:
        return False
    scale = max(float(np.abs(b).max()), 1e-12)
    return bool(np.abs(a - b).max() <= rtol * scale + 1e-12)


def _dtype_only(e, g, exp, got):
    if exp.dtype != got.dtype and _close(g, e, max(_rtol(exp.dtype), _rtol(got.dtype))):
        return f"the values are right; only the dtype is wrong ({got.dtype}, expected {exp.dtype})"
    return None


def _rtol(dtype: str) -> float:
    return {"float64": 1e-10, "float32": 1e-5, "bfloat16": 1e-2, "float16": 1e-3}.get(dtype, 1e-5)


def _precision(e, g, exp, got):
    """Right to a coarser precision than asked: float32 where float64 was, or half where float32 was."""
    if exp.dtype != got.dtype or e.shape != g.shape:
        return None
    err = float(np.abs(g - e).max()) / max(float(np.abs(e).max()), 1e-12)
    if exp.dtype == "float64" and 1e-9 < err <= 1e-5:
        return ("right to float32 precision only (relative error {:.0e}): the float64 input was computed "
                "in float32 somewhere (a .float(), a float32 tensor or constant)").format(err)
    if exp.dtype == "float32" and 1e-4 < err <= 2e-2:
        return (f"right to about {round(-math.log10(err))} digits only: part of it was computed in bfloat16 or "
                "float16 (upcast with .float() first)")
    return None


def _factor(e, g, exp, got, hidden=False):
    """``got ≈ c · expected`` for one constant c ≠ 1; c is named when it is a familiar one (and, but for a
    hidden check, printed otherwise)."""
    if e.shape != g.shape or e.dtype.kind == "c":
        return None
    norm = float((e * e).sum())
    if norm < 1e-20:
        return None
    c = float((g * e).sum()) / norm
    if abs(c - 1) < 1e-3 or not _close(g, c * e):
        return None
    if abs(c + 1) < 1e-3:
        return "equals the expected result with the sign flipped (a minus sign, or a subtraction the wrong way round)"
    name = _name_factor(c, exp.shape)
    if name is None and e.size < 2:
        return None  # one number is always some multiple of another: say so only for a familiar factor
    if name is None and hidden:
        return "equals the expected result times a constant everywhere: a scale factor is wrong or missing"
    return f"equals the expected result × {name or f'{c:.4g}'} everywhere: a scale factor is wrong or missing"


def _name_factor(c: float, shape: tuple) -> str | None:
    """``2``, ``1/2``, ``√8``, ``1/√8``… for a factor made of a small integer or a size of the result, else None."""
    for n in sorted(set(range(2, 17)) | {n for n in shape if n > 1}):
        for value, text in ((n, f"{n}"), (1 / n, f"1/{n}"), (math.sqrt(n), f"√{n}"), (1 / math.sqrt(n), f"1/√{n}")):
            if abs(c - value) <= 1e-4 * abs(value):
                return text
    return None


def _permuted_axes(e, g, exp, got):
    if e.ndim < 2 or e.ndim > 5 or sorted(e.shape) != sorted(g.shape):
        return None
    for perm in itertools.permutations(range(e.ndim)):
        if perm != tuple(range(e.ndim)) and e.transpose(perm).shape == g.shape and _close(g, e.transpose(perm)):
            swapped = [i for i, p in enumerate(perm) if p != i]
            return (f"equals the expected result with axes {tuple(swapped)} in another order (axis order {perm}): "
                    "a missing or extra transpose/permute")
    return None


def _pair_layout(e, g, exp, got):
    d = e.shape[-1] if e.ndim else 0
    if e.shape != g.shape or d < 4 or d % 2:
        return None
    interleaved_to_half = np.r_[np.arange(0, d, 2), np.arange(1, d, 2)]
    if _close(g, e[..., interleaved_to_half]) or _close(g, e[..., np.argsort(interleaved_to_half)]):
        return ("equals the expected result with the last axis in the other layout: interleaved pairs "
                "(x[2i], x[2i+1]) versus halves (x[i], x[i + d/2]), as in RoPE's two conventions")
    swapped = np.arange(d).reshape(-1, 2)[:, ::-1].reshape(-1)
    if _close(g, e[..., swapped]):
        return "equals the expected result with each pair of the last axis swapped (x[2i+1], x[2i])"
    return None


def _shift(e, g, exp, got):
    if e.shape != g.shape:
        return None
    for axis in range(e.ndim):
        n = e.shape[axis]
        if n < 3:
            continue
        head, tail = [slice(None)] * e.ndim, [slice(None)] * e.ndim
        head[axis], tail[axis] = slice(1, None), slice(None, -1)
        for later, earlier, word in ((g, e, "later"), (e, g, "earlier")):
            if _close(later[tuple(head)], earlier[tuple(tail)]) and not _close(g, e):
                return (f"equals the expected result shifted by one along axis {axis} (position i holds what "
                        f"belongs at i {'- 1' if word == 'later' else '+ 1'}): an off-by-one position or offset")
    return None


def _prefix(e, g, exp, got):
    """Right for the first k of n positions along an axis, wrong from k on."""
    if e.shape != g.shape:
        return None
    for axis in range(e.ndim):
        n = e.shape[axis]
        if n < 2:
            continue
        ok = [_close(np.take(g, [i], axis), np.take(e, [i], axis)) for i in range(n)]
        k = ok.index(False) if False in ok else n
        if 0 < k < n and not any(ok[k:]):
            return (f"right for the first {k} of {n} along axis {axis}, wrong from index {k} on: a cache written or "
                    "read at the wrong position, or start_pos not used?")
    return None
