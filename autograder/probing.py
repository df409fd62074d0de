"""Running a probe, and the small helpers probes use to make seeded inputs.

A probe is ``probe(impl, case, gen)``: ``impl`` is an episode module (the
reference, the student's, or a misconception variant), ``case`` the sizes,
``gen`` a seeded ``torch.Generator``. The same call runs in the grader (on the
reference) and in the worker (on the target), so inputs are identical. A check
with a ``setup`` gets, as a fourth argument, what ``setup`` computed on the
reference (sent to the worker as plain tensors).
"""

from __future__ import annotations

import math
import types
import zlib

import torch

from .values import Array, to_plain


def run_probe(check, c, impl, seed: int, given=None):
    """Runs one check's probe on ``impl`` and returns its plain result.

    Args:
        check (registry.Check): The check.
        c (registry.Case): The case.
        impl: Module-like namespace holding the exercise.
        seed (int): Seed of the inputs (see :func:`registry.item_seed`).
        given: The plain result of the check's ``setup`` on the reference, if it has one.

    Returns:
        The probe's result as a plain tree (:mod:`autograder.values`).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if check.setup is None:
            return to_plain(check.probe(impl, c, gen))
        return to_plain(check.probe(impl, c, gen, to_torch(given)))


def run_setup(check, c, reference_module, seed: int):
    """Runs a check's ``setup`` on the reference; returns its plain result (None without setup)."""
    if check.setup is None:
        return None
    gen = torch.Generator().manual_seed(seed ^ 0x5E7)
    with torch.no_grad():
        return to_plain(check.setup(reference_module, c, gen))


def to_torch(tree):
    """Inverse of :func:`values.to_plain` for tensors: :class:`Array` → ``torch.Tensor`` of its dtype."""
    if isinstance(tree, Array):
        return torch.from_numpy(tree.data.copy()).to(getattr(torch, tree.dtype))
    if isinstance(tree, list):
        return [to_torch(x) for x in tree]
    if isinstance(tree, dict):
        return {k: to_torch(v) for k, v in tree.items()}
    return tree


def variant(module, name: str, replacement) -> types.SimpleNamespace:
    """A view of ``module`` in which ``name`` is replaced (used for misconceptions)."""
    ns = types.SimpleNamespace(**vars(module))
    setattr(ns, name, replacement)
    return ns


# --- inputs ----------------------------------------------------------------------


def dtype_of(c) -> torch.dtype:
    """The torch dtype a case asks for (``case.dtype``, default float32)."""
    return getattr(torch, c.params.get("dtype", "float32"))


def randn(gen: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> torch.Tensor:
    """Standard normal values times ``scale``, drawn from ``gen`` (in float64, then cast)."""
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)


def noncontiguous(x: torch.Tensor) -> torch.Tensor:
    """The same values as ``x`` in a non-contiguous view (every other element of a wider buffer)."""
    wide = torch.zeros(*x.shape, 2, dtype=x.dtype)
    view = wide[..., 0]
    view.copy_(x)
    assert not view.is_contiguous() or x.numel() <= 1
    return view


def randint(gen: torch.Generator, high: int, *shape: int) -> torch.Tensor:
    """Integers in ``[0, high)`` as int64."""
    return torch.randint(high, shape, generator=gen)


def named(result, *names: str):
    """Names the parts of a tuple result (``out``, ``weights``) so reports can say which differs.

    Anything that is not a sequence of ``len(names)`` is returned unchanged, so
    the comparison can still say what was returned instead.
    """
    if isinstance(result, (tuple, list)) and len(result) == len(names):
        return dict(zip(names, result))
    return result


def future_change(fn, inputs: list[torch.Tensor], i: int, gen: torch.Generator, axis: int = -2) -> torch.Tensor:
    """How much the outputs at positions ``<= i`` move when every input position ``> i`` changes.

    For a causal function this is all zeros: a property check compares it with
    the reference's (zeros), so a peek into the future shows as a nonzero
    difference at the affected positions.

    Args:
        fn: Called as ``fn(*inputs)``; returns a tensor or a tuple whose first item is the output.
        inputs: Tensors with the position axis at ``axis``.
        i: Last position that must not be affected.
        gen: Generator for the replacement values.
        axis: Position axis of the inputs and of the output.

    Returns:
        torch.Tensor: ``fn(*changed)[..:i+1..] - fn(*inputs)[..:i+1..]``.
    """
    changed = []
    for x in inputs:
        y = x.clone()
        future = y.narrow(axis, i + 1, x.shape[axis] - i - 1)
        future.copy_(randn(gen, *future.shape, dtype=x.dtype, scale=3.0))
        changed.append(y)

    def first(out):
        return out[0] if isinstance(out, (tuple, list)) else out

    before, after = first(fn(*inputs)), first(fn(*changed))
    return (after - before).narrow(axis, 0, i + 1)


# --- modules -------------------------------------------------------------------------


def load_weights(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fills every parameter with seeded values chosen by its *name*, so that a
    student's module and the reference hold identical weights.

    Matrices get ``randn / sqrt(fan_in)``; vectors named ``*bias`` get
    ``0.1 * randn``; other vectors (norm scales) ``1 + 0.1 * randn``.

    Args:
        module: The module; it is changed in place.
        seed: Seed of this module's weights.

    Returns:
        The module, in eval mode.
    """
    with torch.no_grad():
        for name, p in module.named_parameters():
            gen = torch.Generator().manual_seed(seed ^ zlib.crc32(name.encode()))
            if p.dim() >= 2:
                values = randn(gen, *p.shape) / math.sqrt(p.shape[-1])
            elif name.endswith("bias"):
                values = 0.1 * randn(gen, *p.shape)
            else:
                values = 1 + 0.1 * randn(gen, *p.shape)
            p.copy_(values.to(p.dtype))
    return module.eval()


def build(cls, *args, gen: torch.Generator, **kwargs) -> torch.nn.Module:
    """Instantiates a module class and loads seeded weights (seed drawn from ``gen``)."""
    seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
    module = cls(*args, **kwargs)
    return load_weights(module, seed)
