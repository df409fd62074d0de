"""Diagnosis text, tolerances, and the safe wire format."""

import json
import struct

import numpy as np
import pytest
import torch

from autograder.compare import diagnose
from autograder.values import Array, decode, encode, to_plain


def plain(x):
    return to_plain(x)


def test_equal_within_tolerance_is_silent():
    x = torch.randn(3, 4)
    assert diagnose(plain(x), plain(x + 1e-7)) == []


def test_shape_mismatch_names_both_shapes_and_suspects_a_transpose():
    (line,) = diagnose(plain(torch.zeros(2, 5, 3)), plain(torch.zeros(2, 3, 5)))
    assert "shape (2, 3, 5), expected (2, 5, 3)" in line and "transpose" in line


def test_values_report_count_location_and_errors():
    exp = torch.zeros(2, 3, 4)
    got = exp.clone()
    got[1, 2, 3] = 0.5
    (line,) = diagnose(plain(exp), plain(got))
    assert "1 of 24 elements (4%)" in line and "at [1, 2, 3]" in line and "got 0.5, expected 0" in line
    assert "atol 1e-05, rtol 1e-04" in line


def test_hidden_checks_never_show_expected_values_or_locations():
    exp = torch.full((4,), 0.123456)
    got = torch.zeros(4)
    (line,) = diagnose(plain(exp), plain(got), hidden=True)
    assert "0.123" not in line and "[" not in line and "4 of 4" in line


def test_nan_and_dtype_are_reported():
    lines = diagnose(plain(torch.ones(3)), plain(torch.tensor([1.0, float("nan"), 1.0], dtype=torch.float64)))
    assert any("dtype float64, expected float32" in x for x in lines)
    assert any("1 NaN" in x and "[1]" in x for x in lines)


def test_inf_where_expected_is_fine_but_wrong_sign_is_not():
    ninf = torch.tensor([float("-inf"), 1.0])
    assert diagnose(plain(ninf), plain(ninf.clone())) == []
    assert diagnose(plain(ninf), plain(torch.tensor([float("inf"), 1.0])))


def test_float64_is_tighter_than_float32():
    a = torch.ones(3, dtype=torch.float64)
    assert diagnose(plain(a), plain(a + 1e-6))
    assert not diagnose(plain(a.float()), plain(a.float() + 1e-6))


def test_structure_mismatches_teach():
    (line,) = diagnose(plain((torch.ones(2), torch.ones(2))), plain(torch.ones(2)))
    assert "expected a sequence of 2, got a tensor" in line
    (line,) = diagnose(plain(torch.ones(2)), None)
    assert "missing return" in line
    lines = diagnose({"out": plain(torch.ones(2)), "weights": plain(torch.ones(2))},
                     {"out": plain(torch.ones(2)), "weights": plain(torch.zeros(2))})
    assert len(lines) == 1 and lines[0].startswith("weights:")


def test_integers_compare_exactly():
    assert diagnose(plain(torch.tensor([1, 2])), plain(torch.tensor([1, 3])))
    assert diagnose(7, 8) and not diagnose(7, 7)


def test_wire_format_round_trips_bfloat16_complex_and_nesting():
    tree = {"a": torch.randn(2, 3).to(torch.bfloat16), "b": [torch.polar(torch.ones(2), torch.ones(2)), 3, "x"],
            "c": None, "d": torch.arange(4).view(2, 2).t()}
    back = decode(encode(to_plain(tree)))
    assert back["a"].dtype == "bfloat16" and back["a"].data.dtype == np.float32
    assert np.array_equal(back["a"].data, tree["a"].float().numpy())
    assert back["b"][0].dtype == "complex64" and back["b"][1:] == [3, "x"] and back["c"] is None
    assert np.array_equal(back["d"].data, tree["d"].numpy())


def test_tensor_subclasses_are_read_as_plain_tensors():
    class Liar(torch.Tensor):
        def numpy(self, *args, **kwargs):
            return np.zeros(self.shape, dtype=np.float32)

    t = torch.ones(3).as_subclass(Liar)
    assert isinstance(to_plain(t), Array) and to_plain(t).data.tolist() == [1.0, 1.0, 1.0]


def test_decode_refuses_object_arrays():
    header = json.dumps({"tree": {"$a": 0}, "arrays": [{"np": "object", "dtype": "float32", "shape": [1],
                                                         "offset": 0, "nbytes": 8}]}).encode()
    with pytest.raises(ValueError):
        decode(struct.pack("<I", len(header)) + header + b"\0" * 8)
