"""Comparison of plain trees and the diagnosis text a student reads.

``diagnose(expected, got, ...)`` returns ``[]`` when the two agree within
tolerance, else one line per problem: shape and dtype, NaN/inf, how many
elements are off, the largest absolute and relative error and where. For hidden
checks the lines never contain expected values, locations or error sizes from
which an expected value could be recovered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .untrusted import MAX_NAME_CHARS, clean_text
from .values import Array, Unsupported


@dataclass(frozen=True)
class Tolerance:
    """Elementwise test ``|got - expected| <= atol + rtol * |expected|`` (as ``torch.allclose``)."""

    atol: float
    rtol: float

    def __str__(self) -> str:
        return f"atol {self.atol:.0e}, rtol {self.rtol:.0e}"


# Keyed by the expected tensor's dtype; "scalar" is for Python floats.
DEFAULT_TOLERANCES = {
    "float64": Tolerance(1e-10, 1e-7),
    "complex128": Tolerance(1e-10, 1e-7),
    "float32": Tolerance(1e-5, 1e-4),
    "complex64": Tolerance(1e-5, 1e-4),
    "float16": Tolerance(1e-3, 1e-3),
    "bfloat16": Tolerance(1e-2, 1.6e-2),
    "scalar": Tolerance(1e-6, 1e-5),
}

MAX_LINES = 6


def diagnose(expected, got, tolerances: dict | None = None, hidden: bool = False) -> list[str]:
    """Compares two plain trees.

    Args:
        expected: The reference's plain result.
        got: The target's plain result.
        tolerances: Per-dtype overrides of :data:`DEFAULT_TOLERANCES`.
        hidden: Leave out anything that would reveal expected values.

    Returns:
        list[str]: Problems found, at most :data:`MAX_LINES`; empty when they agree.
    """
    tol = dict(DEFAULT_TOLERANCES, **(tolerances or {}))
    lines: list[str] = []
    _walk("output", expected, got, tol, hidden, lines)
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES - 1] + [f"… and {len(lines) - MAX_LINES + 1} more differences"]
    return lines


def agrees(expected, got, tolerances: dict | None = None) -> bool:
    """True when ``got`` equals ``expected`` within tolerance (used to match misconceptions)."""
    return not diagnose(expected, got, tolerances)


def _kind(x) -> str:
    if isinstance(x, Array):
        return "a tensor"
    if isinstance(x, Unsupported):
        return f"an object of type {clean_text(x.type_name, MAX_NAME_CHARS)}"
    if x is None:
        return "None"
    if isinstance(x, list):
        return f"a sequence of {len(x)}"
    if isinstance(x, dict):
        return "a dict"
    return f"a {type(x).__name__}"


def _walk(path, exp, got, tol, hidden, lines):
    if isinstance(exp, Array) and isinstance(got, Array):
        lines.extend(_diagnose_array(path, exp, got, tol, hidden))
    elif isinstance(exp, list) and isinstance(got, list):
        if len(exp) != len(got):
            lines.append(f"{path}: expected {len(exp)} items, got {len(got)}")
            return
        for i, (e, g) in enumerate(zip(exp, got)):
            _walk(f"{path}[{i}]", e, g, tol, hidden, lines)
    elif isinstance(exp, dict) and isinstance(got, dict):
        missing = [k for k in exp if k not in got]
        if missing:
            lines.append(f"{path}: missing {', '.join(missing)}")
        extra = [k for k in got if k not in exp]
        if extra:
            names = ", ".join(clean_text(k, MAX_NAME_CHARS) for k in extra[:5])
            lines.append(f"{path}: unexpected {names}" + (f" and {len(extra) - 5} more" if len(extra) > 5 else ""))
        for k in exp:
            if k in got:
                _walk(f"{path}.{k}" if path != "output" else k, exp[k], got[k], tol, hidden, lines)
    elif _is_number(exp) and _is_number(got):
        lines.extend(_diagnose_number(path, exp, got, tol, hidden))
    elif isinstance(exp, str) and isinstance(got, str):
        if exp != got:
            lines.append(f"{path}: got {clean_text(repr(got), MAX_NAME_CHARS)}" + ("" if hidden else f", expected {exp!r}"))
    elif exp is None and got is None:
        pass
    else:
        extra = " (a missing return statement?)" if got is None and path == "output" else ""
        if isinstance(exp, list) and isinstance(got, Array):
            extra = f" (return all {len(exp)} results, as the docstring says)"
        lines.append(f"{path}: expected {_kind(exp)}, got {_kind(got)}{extra}")


def _is_number(x) -> bool:
    return isinstance(x, (int, float))  # bool is an int


def _diagnose_number(path, exp, got, tol, hidden) -> list[str]:
    if isinstance(exp, int):  # counts, sizes, token ids: exact, and an int must come back
        if not isinstance(got, int):
            return [f"{path}: got the float {_fmt_number(got)}; the result is an integer (return an int, "
                    "e.g. with // instead of /, or int(...))"]
        if exp == got:
            return []
        return [f"{path}: got {_fmt_number(got)}" + ("" if hidden else f", expected {exp}")]
    t = tol["scalar"]
    e, g = float(exp), _as_float(got)
    if np.isnan(e) and np.isnan(g) or e == g:
        return []
    if abs(g - e) <= t.atol + t.rtol * abs(e):
        return []
    if hidden:
        return [f"{path}: value out of tolerance ({t})"]
    return [f"{path}: got {_fmt_value(g, e)}, expected {_fmt_value(e, g)} (|Δ| {abs(g - e):.2e}; {t})"]


def _as_float(x) -> float:
    """``float(x)``, with ints too large for a float as ±inf (student code may return 10**400)."""
    try:
        return float(x)
    except OverflowError:
        return float("inf") if x > 0 else float("-inf")


def _fmt_number(x) -> str:
    """A number as the student returned it, shortened when it is enormous."""
    text = repr(x)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} digits)"


def _fmt_shape(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + (",)" if len(shape) == 1 else ")")


def _fmt_index(idx) -> str:
    return "[" + ", ".join(str(int(i)) for i in idx) + "]"


def _shape_hint(exp_shape, got_shape) -> str:
    if sorted(exp_shape) == sorted(got_shape):
        return " — the same sizes in another order: are two axes swapped (a missing transpose or permute)?"
    if int(np.prod(exp_shape)) == int(np.prod(got_shape)):
        return " — the same number of elements: a view/reshape into the wrong layout?"
    if len(exp_shape) != len(got_shape):
        return f" — {len(got_shape)} dims instead of {len(exp_shape)}: a missing or extra (un)squeeze, or a reduction over the wrong axis?"
    return ""


def _diagnose_array(path, exp: Array, got: Array, tol, hidden) -> list[str]:
    if exp.shape != got.shape:
        return [f"{path}: shape {_fmt_shape(got.shape)}, expected {_fmt_shape(exp.shape)}"
                + _shape_hint(exp.shape, got.shape)]
    lines = []
    if exp.dtype != got.dtype:
        lines.append(f"{path}: dtype {got.dtype}, expected {exp.dtype}")
    e, g = exp.data, got.data
    if e.size == 0:
        return lines
    exact = e.dtype.kind in "biu" and g.dtype.kind in "biu"
    if exact:
        bad = e != g
        if bad.any():
            first = np.argwhere(bad)[0]
            msg = f"{path}: {int(bad.sum())} of {e.size} elements differ"
            if not hidden:
                msg += f"; first at {_fmt_index(first)} (got {g[tuple(first)]}, expected {e[tuple(first)]})"
            lines.append(msg)
        return lines

    e = e.astype(np.complex128 if e.dtype.kind == "c" or g.dtype.kind == "c" else np.float64)
    g = g.astype(e.dtype)
    t = tol.get(exp.dtype, tol["float32"])
    if np.isfinite(e).all() and np.isfinite(g).all() and (np.abs(g - e) <= t.atol + t.rtol * np.abs(e)).all():
        return lines  # the usual case, a passed check, in a few operations
    # Non-finite values must sit where the reference has them (e.g. -inf for masked scores).
    e_fin, g_fin = np.isfinite(e), np.isfinite(g)
    for name, test in (("NaN", np.isnan), ("inf", np.isinf)):
        extra = test(g) & ~test(e)
        if extra.any():
            first = np.argwhere(extra)[0]
            where = "" if hidden else f" (first at {_fmt_index(first)})"
            lines.append(f"{path}: {int(extra.sum())} {name} where the result should be finite{where}"
                         " — an overflow, a log/division of zero, or a row whose every entry is masked?")
    missing_nonfinite = ~e_fin & g_fin
    if missing_nonfinite.any():
        lines.append(f"{path}: {int(missing_nonfinite.sum())} elements are finite where the result "
                     "should be ±inf/NaN")
    wrong_nonfinite = ~e_fin & ~g_fin & ~((np.isnan(e) & np.isnan(g)) | (e == g))
    if wrong_nonfinite.any():
        lines.append(f"{path}: {int(wrong_nonfinite.sum())} non-finite elements have the wrong sign or kind")
    both = e_fin & g_fin
    if not both.any():
        return lines
    err = np.zeros(e.shape)
    err[both] = np.abs(g[both] - e[both])
    allowed = t.atol + t.rtol * np.abs(e)
    bad = both & (err > allowed)
    if not bad.any():
        return lines
    n_bad = int(bad.sum())
    frac = n_bad / e.size
    if hidden:
        lines.append(f"{path}: values differ in {n_bad} of {e.size} elements ({frac:.0%}) beyond tolerance ({t})")
        return lines
    worst = np.unravel_index(int(np.argmax(np.where(bad, err, -1.0))), e.shape)
    rel = err / np.maximum(np.abs(e), 1e-30)
    worst_rel = float(np.max(np.where(bad, rel, 0.0)))
    lines.append(
        f"{path}: values differ: {n_bad} of {e.size} elements ({frac:.0%}) out of tolerance ({t}); "
        f"max |Δ| {err[worst]:.2e} at {_fmt_index(worst)} (got {_fmt_value(g[worst], e[worst])}, expected "
        f"{_fmt_value(e[worst], g[worst])}); max rel err {worst_rel:.2e}"
    )
    return lines


def _fmt_value(x, other=None) -> str:
    """``x`` to 6 significant digits, or as many more as it takes to differ from ``other``.

    Example:
        >>> _fmt_value(-1.646240001, -1.64624)
        '-1.646240001'
    """
    if isinstance(x, complex) or np.iscomplexobj(x):
        return f"{complex(x):.4g}"
    x = float(x)
    for digits in (6, 9, 12, 17):
        text = f"{x:.{digits}g}"
        if other is None or text != f"{float(other):.{digits}g}":
            return text
    return text
