"""The in-notebook API: ``check`` (same checks as dsgrade, partial credit, silent stderr), the
reference it picks, ``given`` for earlier episodes, and ``when_implemented`` for plots."""

from __future__ import annotations

import sys
import warnings

import pytest
from notebook_cycle import mistaken_exercise

from autograder import notebook_api, registry
from autograder.compare import _fmt_value
from autograder.notebook_api import DEFAULT_SEED, check, given, when_implemented
from autograder.reference import LiveReference, record_fixtures
from autograder.values import Array

SOLUTIONS_EP05 = pytest.importorskip("solutions.ep05_self_attention")


def expected_strings(exercise, hidden: bool, seed: int = DEFAULT_SEED) -> set[str]:
    """Expected values of an exercise's hidden (or public) checks as the diagnosis would print them.

    Only values with at least four significant digits count, so that a match is not chance.
    """
    reference, found = LiveReference(), set()

    def walk(tree):
        if isinstance(tree, Array) and tree.data.dtype.kind == "f":
            found.update(_fmt_value(x) for x in tree.data.ravel())
        elif isinstance(tree, (list, tuple)):
            for x in tree:
                walk(x)
        elif isinstance(tree, dict):
            for x in tree.values():
                walk(x)
        elif isinstance(tree, float):
            found.add(_fmt_value(tree))

    for chk in exercise.checks:
        if chk.hidden == hidden:
            for c in chk.cases:
                walk(reference.expected(chk, c, registry.item_seed(seed, chk.item_id(c))))
    return {s for s in found if sum(ch.isdigit() for ch in s.lstrip("-0.")) >= 4}


def test_the_default_seed_is_dsgrades():
    from autograder import plugin

    assert DEFAULT_SEED == plugin.DEFAULT_SEED  # fixtures recorded by `dsgrade fixtures` match notebooks


def test_check_gives_full_points_to_the_reference(capsys):
    ex, _ = mistaken_exercise()
    reference_obj = getattr(SOLUTIONS_EP05, ex.name)
    public = sum(c.points * len(c.cases) for c in ex.checks if not c.hidden)
    assert check(ex.id, reference_obj) == public > 0
    assert check(ex.id, reference_obj, hidden=True) == ex.max_score - public > 0
    out = capsys.readouterr()
    assert f"{ex.id} · public checks: {public:g}/{public:g} points" in out.out
    assert out.err == ""


def test_a_misconception_gets_partial_credit_and_its_hint(capsys):
    ex, mistake = mistaken_exercise()
    public = sum(c.points * len(c.cases) for c in ex.checks if not c.hidden)
    score = check(ex.id, mistake.replacement)
    assert 0 <= score < public
    out = capsys.readouterr().out
    assert "✗" in out and mistake.hint.split(".")[0] in out


def test_hidden_results_never_show_expected_values(capsys):
    ex, mistake = mistaken_exercise()
    assert check(ex.id, mistake.replacement, hidden=True) < ex.max_score
    assert check(ex.id, mistake.replacement) < ex.max_score
    hidden_out, public_out = capsys.readouterr().out.split(f"{ex.id} · public checks")
    hidden_values, public_values = expected_strings(ex, hidden=True), expected_strings(ex, hidden=False)
    assert hidden_values and "hidden checks" in hidden_out
    assert not [v for v in hidden_values if v in hidden_out]
    # The same search finds the expected values that public checks do show: the test can fail.
    assert [v for v in public_values if v in public_out]


def test_nothing_reaches_stderr_even_when_the_code_warns(capsys):
    def noisy(*args, **kwargs):
        warnings.warn("deprecated thing", DeprecationWarning)
        print("debug output", file=sys.stderr)
        return SOLUTIONS_EP05.scaled_dot_product_attention(*args, **kwargs)

    score = check("ep05.scaled_dot_product_attention", noisy)
    out = capsys.readouterr()
    assert score > 0 and out.err == ""
    assert "your code wrote to stderr" in out.out and "debug output" in out.out


def test_stubs_and_exceptions_score_zero_with_one_line(capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    assert check("ep05.scaled_dot_product_attention", stub) == 0
    out = capsys.readouterr().out
    assert "all " in out and "not implemented yet" in out and out.count("not implemented yet") == 1

    def broken(q, k, v, mask=None):
        return q.nonexistent

    assert check("ep05.scaled_dot_product_attention", broken) == 0
    assert "AttributeError" in capsys.readouterr().out


def test_html_result_is_an_escaped_table():
    ex, mistake = mistaken_exercise()
    exercise = notebook_api.find_exercise(ex.id)
    records = [r for r in notebook_api.grade_locally(exercise, SOLUTIONS_EP05, notebook_api.reference(), DEFAULT_SEED)]
    records[0].status, records[0].message, records[0].points = "failed", "shape (2, 3) <wrong>", 0.0
    result = notebook_api.CheckResult(exercise, records, hidden=False)
    page = result._repr_html_()
    assert "<table>" in page and "&lt;wrong&gt;" in page and "<wrong>" not in page
    assert result.score == exercise.max_score - records[0].max_points


def test_the_probes_see_the_notebooks_namespace(monkeypatch):
    # Probes may use other names of the episode (ep09's use impl.KVCache): they must get the student's.
    seen = {}
    monkeypatch.setattr(notebook_api, "grade_locally", lambda ex, impl, *args: seen.setdefault("impl", impl) and [])
    notebook = {"check": check, "helper": "the student's helper", "mine": lambda q, k, v, mask=None: None}
    exec('score = check("ep05.scaled_dot_product_attention", mine)', notebook)
    impl = seen["impl"]
    assert impl.helper == "the student's helper" and impl.scaled_dot_product_attention is notebook["mine"]
    assert notebook["score"] == 0


def test_unknown_exercises_are_named():
    with pytest.raises(ValueError, match="no exercise 'ep05.nope'"):
        check("ep05.nope", None)
    with pytest.raises(ValueError, match="no episode 'ep99'"):
        check("ep99.x", None)


@pytest.fixture
def fixtures_file(tmp_path, monkeypatch):
    path = tmp_path / "ep05.fixtures"
    record_fixtures([registry.load_episode("ep05")], DEFAULT_SEED, path)
    monkeypatch.setenv(notebook_api.FIXTURES_ENV, str(path))
    return path


def test_fixtures_are_the_reference_when_named(fixtures_file, monkeypatch, capsys):
    ex, mistake = mistaken_exercise()
    # No solutions: the reference must come from the fixtures file alone.
    monkeypatch.setattr(notebook_api.LiveReference, "expected", None)
    assert type(notebook_api.reference()).__name__ == "FixtureReference"
    public = sum(c.points * len(c.cases) for c in ex.checks if not c.hidden)
    assert check(ex.id, getattr(SOLUTIONS_EP05, ex.name)) == public
    assert check(ex.id, mistake.replacement) < public
    assert mistake.hint.split(".")[0] in capsys.readouterr().out


def test_without_solutions_or_fixtures_the_error_says_what_to_do(monkeypatch):
    monkeypatch.delenv(notebook_api.FIXTURES_ENV, raising=False)
    monkeypatch.setattr(notebook_api.importlib.util, "find_spec", lambda name: None)
    notebook_api._reference.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=notebook_api.FIXTURES_ENV):
            notebook_api.reference()
    finally:
        notebook_api._reference.cache_clear()


def test_given_is_the_course_reference_when_installed():
    assert given("ep05_self_attention") is SOLUTIONS_EP05


def test_without_solutions_given_loads_the_students_earlier_notebook(tmp_path, monkeypatch):
    from autograder.notebooks import build_course

    build_course(tmp_path)
    (tmp_path / "source" / "ep06").mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path / "source" / "ep06")
    for loaded in [m for m in sys.modules if m == "solutions" or m.startswith("solutions.")]:
        monkeypatch.setitem(sys.modules, loaded, None)  # as on a machine without solutions/
    name = f"{notebook_api.NOTEBOOK_PACKAGE}.ep05_self_attention"
    monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        module = given("ep05_self_attention")
        assert module.__name__ == name and module.__file__.endswith("ep05.ipynb")
        import torch

        q = torch.randn(2, 3, 4)
        out, weights = module.scaled_dot_product_attention(q, q, q)
        expected = SOLUTIONS_EP05.scaled_dot_product_attention(q, q, q)
        assert torch.allclose(out, expected[0]) and torch.allclose(weights, expected[1])
        assert given("config").__name__ == "exercises.config"  # no notebook: the verbatim copy
    finally:
        sys.modules.pop(name, None)


def test_when_implemented_turns_a_stub_into_a_note(capsys):
    with when_implemented():
        raise NotImplementedError("ep05.scaled_dot_product_attention")
    assert "ep05.scaled_dot_product_attention" in capsys.readouterr().out
    with pytest.raises(ValueError):
        with when_implemented():
            raise ValueError("a real bug must show")
