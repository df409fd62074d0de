"""The in-notebook API: what the generated notebooks call from their cells.

* ``check("ep05.scaled_dot_product_attention", scaled_dot_product_attention)``
  runs the exercise's public checks (``hidden=True``: its hidden checks) on the
  student's object with :func:`grading.grade_locally` — the same checks,
  comparison and hints as ``dsgrade`` — shows a compact result (an HTML table in
  Jupyter, text elsewhere) and returns the points earned. A test cell ends with
  that number, which is how nbgrader reads partial credit (the ``text/plain`` of
  the cell's result). Nothing is written to stderr: nbgrader scores a test cell
  with any stderr output as 0, so warnings are silenced and whatever the code
  under test writes to stderr is shown in the result instead.
* ``given("ep05_self_attention")`` is the module an episode's relative import
  (``from .ep05_self_attention import …``) becomes in a notebook (see :func:`given`).
* ``with when_implemented():`` lets a plot cell run before the exercises it draws are done.

The reference (see :func:`reference`): recorded fixtures when ``$DSGRADE_FIXTURES``
names a file, else the public fixtures of a student release (``dsgrade release``), else
the live ``solutions`` package when it is importable (the
repo, an instructor's machine: hidden checks need it), else an error that says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import html
import importlib
import importlib.util
import io
import json
import os
import sys
import types
import warnings
from pathlib import Path

from . import registry
from .grading import grade_locally
from .reference import LiveReference, choose_reference

FIXTURES_ENV = "DSGRADE_FIXTURES"
DEFAULT_SEED = 1234  # = plugin.DEFAULT_SEED (not imported: a kernel need not load pytest); a test checks it
NOTEBOOK_PACKAGE = "dsgrade_notebooks"  # where modules loaded from earlier notebooks are registered
MODULE_ROLES = ("setup", "given", "solution")  # cells that define an episode's module (not checks, not plots)


def reference():
    """Where expected outputs come from: ``$DSGRADE_FIXTURES``, else live ``solutions``."""
    return _reference(os.environ.get(FIXTURES_ENV) or None)


@functools.lru_cache(maxsize=None)
def _reference(fixtures: str | None):
    from .reference import PACKAGED_FIXTURES

    if fixtures or PACKAGED_FIXTURES.exists():  # a named file, or a student release's public fixtures
        return choose_reference(fixtures)
    if importlib.util.find_spec("solutions") is None:
        raise RuntimeError(f"no reference to check against: the course's solutions are not installed; set "
                           f"{FIXTURES_ENV} to the fixtures file of your course (recorded with 'dsgrade fixtures')")
    return LiveReference()  # cached per kernel, so re-running a check cell is fast


def find_exercise(exercise_id: str):
    """The registry's exercise ``epNN.name``."""
    episode_id, _, name = exercise_id.partition(".")
    if episode_id not in registry.episode_ids():
        raise ValueError(f"no episode {episode_id!r} (episodes: {', '.join(registry.episode_ids())})")
    for ex in registry.load_episode(episode_id).exercises:
        if ex.name == name:
            return ex
    raise ValueError(f"no exercise {exercise_id!r}")


def check(exercise_id: str, obj, *, hidden: bool = False, seed: int | None = None,
          namespace: dict | None = None) -> float:
    """Grades ``obj`` as exercise ``exercise_id``, shows the result, returns the points earned.

    Args:
        exercise_id: e.g. ``"ep05.scaled_dot_product_attention"``.
        obj: The student's function or class.
        hidden: Run the hidden checks instead of the public ones.
        seed: Session seed of the inputs; default: the fixtures' seed, or 1234 (as ``dsgrade``).
        namespace: The episode's module namespace the probes see (``impl``); default: the
            caller's globals, i.e. the notebook's, so ``impl.causal_mask`` is the student's too.

    Returns:
        float: Points earned by the checks run (a test cell ends with it for nbgrader).

    Example:
        >>> score = check("ep05.scaled_dot_product_attention", scaled_dot_product_attention)  # doctest: +SKIP
    """
    exercise = find_exercise(exercise_id)
    impl = types.SimpleNamespace(**(sys._getframe(1).f_globals if namespace is None else namespace))
    setattr(impl, exercise.name, obj)
    ref = reference()
    if hidden and getattr(ref, "public_only", False):
        raise RuntimeError(f"the hidden checks of {exercise_id} are graded by your instructor; this copy of "
                           "the course has the expected outputs of the public checks only")
    seed = getattr(ref, "seed", DEFAULT_SEED) if seed is None else seed
    chosen = dataclasses.replace(exercise, checks=[c for c in exercise.checks if c.hidden == hidden])
    with _quiet() as stderr:
        records = grade_locally(chosen, impl, ref, seed, _source_dir(obj))
    result = CheckResult(exercise, records, hidden, stderr.getvalue())
    _show(result)
    return result.score


@contextlib.contextmanager
def _quiet():
    """Silences warnings and catches stderr (nbgrader would score the cell 0)."""
    buffer = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stderr(buffer):
        warnings.simplefilter("ignore")
        yield buffer


def _source_dir(obj) -> Path | None:
    """The folder of the file ``obj`` was defined in (IPython keeps each cell in a file), for error lines."""
    members = getattr(obj, "__dict__", {}).values()
    functions = [obj] if hasattr(obj, "__code__") else [f for f in members if hasattr(f, "__code__")]
    return Path(functions[0].__code__.co_filename).resolve().parent if functions else None


def _show(result: "CheckResult") -> None:
    """HTML (with a text fallback) through IPython's display when in a kernel, else plain text."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display(result)
    else:
        print(result.text())


_SYMBOLS = {"passed": "✓", "failed": "✗", "not_implemented": "…", "error": "!", "timeout": "⏱"}


@dataclasses.dataclass
class CheckResult:
    """What one ``check`` call shows: a header line, one row per check (or one row for a shared
    cause), and the hints of the misconceptions the failures match."""

    exercise: object
    records: list
    hidden: bool
    stderr: str = ""

    @property
    def score(self) -> float:
        return float(sum(r.points for r in self.records))

    @property
    def max_score(self) -> float:
        return float(sum(r.max_points for r in self.records))

    def header(self) -> str:
        kind = "hidden" if self.hidden else "public"
        text = f"{self.exercise.id} · {kind} checks: {self.score:g}/{self.max_score:g} points"
        hidden_points = sum(c.points * len(c.cases) for c in self.exercise.checks if c.hidden)
        if not self.hidden and hidden_points:
            text += f" (+{hidden_points:g} in hidden checks when your notebook is graded)"
        return text

    @property
    def hints(self) -> list[str]:
        """The hints of the failed checks, each once (one mistake usually fails several checks)."""
        return list(dict.fromkeys(r.hint for r in self.records if r.hint and not r.passed))

    def rows(self) -> list[tuple[str, str, str, str]]:
        """``(symbol, check, points, details)``; checks that all failed the same way share one row."""
        causes = {(r.status, r.message) for r in self.records}
        if len(self.records) > 1 and len(causes) == 1 and not self.records[0].passed:
            r = self.records[0]
            return [(_SYMBOLS[r.status], f"all {len(self.records)} checks", f"0/{self.max_score:g}",
                     _details(r))]
        return [(_SYMBOLS[r.status], f"{r.description} [{r.id.split('::')[1]}]",
                 f"{r.points:g}/{r.max_points:g}", _details(r)) for r in self.records]

    def text(self) -> str:
        lines = [self.header()]
        for symbol, name, points, details in self.rows():
            lines.append(f"  {symbol} {points:>7}  {name}")
            lines += [f"      {line}" for line in details.splitlines()]
        lines += [f"  hint: {hint}" for hint in self.hints]
        if self.stderr:
            lines.append("  your code wrote to stderr:\n" + self.stderr)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        e = html.escape
        body = "".join(
            f"<tr><td>{e(s)}</td><td style='text-align:right'>{e(p)}</td><td style='text-align:left'>{e(n)}</td>"
            f"<td style='text-align:left'>{e(d).replace(chr(10), '<br>')}</td></tr>"
            for s, n, p, d in self.rows())
        hints = "".join(f"<p><b>hint:</b> {e(hint)}</p>" for hint in self.hints)
        stderr = f"<pre>your code wrote to stderr:\n{e(self.stderr)}</pre>" if self.stderr else ""
        return (f"<div class='dsgrade-check'><b>{e(self.header())}</b><table>"
                f"<tr><th></th><th>points</th><th>check</th><th>details</th></tr>{body}</table>"
                f"{hints}{stderr}</div>")


def _details(record) -> str:
    """What a student reads about one check: its message, or else its status ('' when it passed)."""
    return "" if record.passed else record.message or record.status.replace("_", " ")


@contextlib.contextmanager
def when_implemented():
    """Runs a plot cell's body; if the student's code is still a stub, says so instead of a traceback."""
    try:
        yield
    except NotImplementedError as e:
        needed = f" ({e})" if str(e) else ""
        print(f"This picture uses code you have not written yet{needed}: "
              "fill in the exercises above, then run this cell again.")


def given(module: str) -> types.ModuleType:
    """The module an episode's relative import (``from .ep05_self_attention import x``) comes from.

    In order:

    1. the course's reference, ``solutions.<module>``, installed with the package: in the
       repo and for instructors, so every notebook builds on known-good code and grading one
       episode never depends on another;
    2. on a machine without ``solutions``: the student's own earlier notebook,
       ``../epNN/epNN.ipynb`` next to this one (nbgrader's layout of fetched assignments);
    3. else ``exercises.<module>`` (modules without exercises, such as ``config``, are copied
       there verbatim).

    Args:
        module: Module name, e.g. ``"ep05_self_attention"`` or ``"config"``.
    """
    try:
        return importlib.import_module(f"solutions.{module}")
    except ModuleNotFoundError as e:
        if e.name not in ("solutions", f"solutions.{module}"):
            raise
    from .authoring import episode_id

    episode = episode_id(f"{module}.py")
    notebook = Path.cwd().parent / episode / f"{episode}.ipynb"
    if notebook.exists():
        return notebook_module(notebook, module)
    return importlib.import_module(f"exercises.{module}")


def notebook_module(path: Path, module: str) -> types.ModuleType:
    """Runs the module cells (setup, given code, solutions) of a notebook as module ``module``."""
    name = f"{NOTEBOOK_PACKAGE}.{module}"
    if name in sys.modules:
        return sys.modules[name]
    mod = types.ModuleType(name)
    mod.__file__ = str(path)
    sys.modules[name] = mod
    try:
        for cell in json.loads(Path(path).read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] == "code" and cell["metadata"].get("dsgrade", {}).get("role") in MODULE_ROLES:
                exec(compile("".join(cell["source"]), str(path), "exec"), mod.__dict__)
    except BaseException:
        del sys.modules[name]  # a broken notebook is retried after the student fixes it
        raise
    return mod
