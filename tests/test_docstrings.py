"""Every solutions module documents itself: runnable examples, and Google-style docstrings
(Args/Returns/Example) on every exercise a student writes."""

import doctest
import importlib
import inspect

import pytest
import torch
from conftest import SOLUTIONS

from autograder import registry

MODULES = sorted(p.stem for p in SOLUTIONS.glob("*.py") if p.stem != "__init__")
EXERCISES = [ex for ep in registry.all_episodes() for ex in ep.exercises]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name):
    torch.set_default_dtype(torch.float32)  # the examples show float32 tensors
    module = importlib.import_module(f"solutions.{name}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0, f"solutions/{name}.py has no runnable example"


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda ex: ex.id)
def test_each_exercise_documents_arguments_returns_and_an_example(exercise):
    obj = getattr(importlib.import_module(f"solutions.{exercise.episode.module}"), exercise.name)
    written = getattr(obj, exercise.method) if exercise.method else obj  # what the student writes
    doc = inspect.getdoc(written) or ""
    params = [p for p in inspect.signature(written).parameters if p != "self"]
    if params:
        assert "Args:" in doc, f"{exercise.id}: no Args section"
    assert "Returns:" in doc or "Example" in doc, f"{exercise.id}: say what it returns"
    examples = doc + (inspect.getdoc(obj) or "") if exercise.method else doc
    assert ">>>" in examples, f"{exercise.id}: no example"
