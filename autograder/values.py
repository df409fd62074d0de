"""Plain values: what a probe's result becomes before it is compared.

A probe returns tensors, numbers, strings, or tuples/lists/dicts of them. Before
anything leaves the worker, the result is turned into a *plain* tree: Python
numbers, strings, bools and None, lists, dicts with string keys, and
:class:`Array` (a NumPy array plus the torch dtype it came from). Plain trees are
sent as a JSON header and raw array bytes: decoding them runs no code from the
sender (no pickle), so a student's objects can never reach the grader.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass

import numpy as np

MAX_HEADER_BYTES = 4 << 20

# The only array dtypes that may cross the process boundary.
_SAFE_DTYPES = {
    "bool": np.bool_, "uint8": np.uint8, "int8": np.int8, "int16": np.int16,
    "int32": np.int32, "int64": np.int64, "float16": np.float16, "float32": np.float32,
    "float64": np.float64, "complex64": np.complex64, "complex128": np.complex128,
}


@dataclass
class Array:
    """A tensor as the grader sees it.

    Attributes:
        data: The values. bfloat16 tensors arrive widened to float32 (exactly).
        dtype: The torch dtype name of the original tensor, e.g. ``"bfloat16"``.
    """

    data: np.ndarray
    dtype: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


@dataclass
class Unsupported:
    """Stands for an object a probe returned that is not a plain value (e.g. a module)."""

    type_name: str


def to_plain(obj):
    """Turns a probe result into a plain tree. Imports torch only if a tensor is present.

    Args:
        obj: Tensors, NumPy arrays, numbers, strings, None, and tuples/lists/dicts of them.

    Returns:
        The same structure with tensors as :class:`Array`; tuples become lists.
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [to_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return _array_from_numpy(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    torch = _torch_if_loaded()
    if torch is not None:
        if isinstance(obj, torch.Tensor):
            return _array_from_tensor(torch, obj)
        if isinstance(obj, torch.Size):
            return [int(x) for x in obj]
        if isinstance(obj, torch.dtype):
            return str(obj).removeprefix("torch.")
    return Unsupported(type(obj).__name__)


def _torch_if_loaded():
    import sys

    return sys.modules.get("torch")


def _array_from_tensor(torch, t) -> Array:
    # A tensor subclass could override every method; view it as a plain tensor first.
    t = torch.Tensor.as_subclass(t, torch.Tensor).detach()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    t = t.to("cpu")
    dtype = str(t.dtype).removeprefix("torch.")
    if dtype not in _SAFE_DTYPES:
        t = t.to(torch.float32)  # bfloat16 and other narrow floats widen exactly
    return Array(np.array(t.contiguous().numpy(), copy=True), dtype)


def _array_from_numpy(a: np.ndarray) -> Array:
    name = a.dtype.name
    if name not in _SAFE_DTYPES:
        if a.dtype.kind == "f":
            return Array(a.astype(np.float64), "float64")
        return Unsupported(f"numpy array of dtype {name}")
    return Array(np.array(a, copy=True), name)


# --- wire format -----------------------------------------------------------------


def encode(tree) -> bytes:
    """Serialises a plain tree: 4-byte header length, JSON header, array bytes.

    Args:
        tree: A plain tree (see :func:`to_plain`).

    Returns:
        bytes: The message body.
    """
    arrays: list[dict] = []
    blobs: list[bytes] = []
    offset = 0

    def enc(node):
        nonlocal offset
        if isinstance(node, Array):
            raw = np.ascontiguousarray(node.data).tobytes()
            arrays.append({"np": node.data.dtype.name, "dtype": node.dtype,
                           "shape": list(node.data.shape), "offset": offset, "nbytes": len(raw)})
            blobs.append(raw)
            offset += len(raw)
            return {"$a": len(arrays) - 1}
        if isinstance(node, Unsupported):
            return {"$u": node.type_name}
        if isinstance(node, list):
            return [enc(x) for x in node]
        if isinstance(node, dict):
            return {"$d": {k: enc(v) for k, v in node.items()}}
        return node

    header = json.dumps({"tree": enc(tree), "arrays": arrays}).encode()
    return struct.pack("<I", len(header)) + header + b"".join(blobs)


def decode(body: bytes, max_header: int = MAX_HEADER_BYTES):
    """Inverse of :func:`encode`. Never unpickles; rejects unknown dtypes and inconsistent sizes.

    Args:
        body: A message body produced by :func:`encode` (possibly by hostile code).
        max_header: Largest JSON header accepted: the structure and the scalars of a result
            are small, its bulk travels as raw array bytes.

    Returns:
        The plain tree.

    Raises:
        ValueError: If the message is malformed.
    """
    (n,) = struct.unpack_from("<I", body)
    if n > max_header or 4 + n > len(body):
        raise ValueError(f"a header of {n} bytes")
    header = json.loads(body[4:4 + n])
    payload = memoryview(body)[4 + n:]
    arrays = []
    for spec in header["arrays"]:
        np_dtype = _SAFE_DTYPES.get(spec["np"])
        if np_dtype is None or not re.fullmatch(r"[a-z0-9_]{1,32}", str(spec["dtype"])):
            raise ValueError(f"refusing array of dtype {str(spec['np'])[:40]}/{str(spec['dtype'])[:40]}")
        shape = [int(s) for s in spec["shape"]]
        start, nbytes = int(spec["offset"]), int(spec["nbytes"])
        if (any(s < 0 for s in shape) or start < 0 or start + nbytes > len(payload)
                or math.prod(shape) * np.dtype(np_dtype).itemsize != nbytes):
            raise ValueError(f"an array of shape {shape[:8]} that does not fit its {nbytes} bytes")
        data = np.frombuffer(payload[start:start + nbytes], dtype=np_dtype).copy()
        arrays.append(Array(data.reshape(shape), str(spec["dtype"])))

    def dec(node):
        if isinstance(node, list):
            return [dec(x) for x in node]
        if isinstance(node, dict):
            if "$a" in node:
                return arrays[int(node["$a"])]
            if "$u" in node:
                return Unsupported(str(node["$u"]))
            return {str(k): dec(v) for k, v in node["$d"].items()}
        return node

    return dec(header["tree"])
