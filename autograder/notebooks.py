"""``solutions/`` + the registry → an nbgrader course: the generator behind ``dsgrade notebooks``.

Writes ``COURSE_DIR/nbgrader_config.py`` (once; it is then the instructor's) and
``COURSE_DIR/source/<episode>/<episode>.ipynb`` for every episode of the registry
(the capstone last). A notebook is its solutions module cut along the top-level
statements, in order:

* a header (markdown): title, video, learning goals (:mod:`autograder.notebook_content`),
  the module docstring and the points;
* a setup cell: the module's imports, plus the notebook API; each relative import
  ``from .ep05_self_attention import f`` becomes ``f = given("ep05_self_attention").f``
  (see :func:`autograder.notebook_api.given`);
* for each exercise (a top-level function or class holding a solution region, see
  :func:`autograder.authoring.regions`): its docstring as markdown, a solution cell (the
  source as it is, with its ``### BEGIN SOLUTION`` region) and an autograded test cell that
  calls ``check(...)``, with the hidden checks in a ``### BEGIN HIDDEN TESTS`` block;
* other top-level code as locked "given" cells, and the episode's plots after the
  exercise they draw.

Solution, test and the course's code cells carry nbgrader metadata (the last two locked);
every cell carries ``metadata.dsgrade.role`` (header, setup, doc, solution, tests, given,
plot), which :func:`autograder.notebook_api.notebook_module` reads. The output is deterministic.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from . import registry
from .authoring import AuthoringError, regions
from .notebook_api import DEFAULT_SEED
from .notebook_content import GOALS, PLOTS

COURSE_ID = "deepseek-from-scratch"
CONFIG_FILE = "nbgrader_config.py"
_ENTRY = re.compile(r"^(?P<name>[^:(]+?)\s*(?P<type>\([^)]*\))?:\s*(?P<text>.*)$")
_SECTION = re.compile(r"^(Args|Arguments|Attributes|Returns|Yields|Raises|Example|Examples|Note|Notes):\s*$")

NBGRADER_CONFIG = f'''\
"""nbgrader configuration of the DeepSeek-from-scratch course (written once by `dsgrade notebooks`; yours now)."""

c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "{COURSE_ID}"
# Test cells build modules and run several cases: give a cell more than nbgrader's default 30 s.
c.Execute.timeout = 300
# Feedback shows every hidden check's result and hint, but not its code (nor the seed of its inputs).
c.GenerateFeedback.preprocessors = ["nbgrader.preprocessors.GetGrades", "nbgrader.preprocessors.ClearHiddenTests",
                                    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor"]
# The exchange students fetch from and submit to (nbgrader's default is /srv/nbgrader/exchange).
# c.Exchange.root = "/srv/nbgrader/exchange"

# nbgrader 0.9 on SQLAlchemy 2 warns "Object of type <SubmittedNotebook> not in session" on every
# autograde: harmless (nbgrader adds the objects itself), so silenced here.
import warnings  # noqa: E402

warnings.filterwarnings("ignore", message=".*not in session, add operation along.*")
'''


def build_course(course_dir: Path, seed: int = DEFAULT_SEED, solutions_dir: Path | None = None) -> list[Path]:
    """Writes the course: the config (if missing) and one source notebook per episode.

    Args:
        course_dir: The nbgrader course directory (created if needed).
        seed: Session seed of the hidden checks' inputs, written into the hidden test blocks.
        solutions_dir: Where the solutions modules are (default: the package's).

    Returns:
        list[Path]: The files written (the config only when it was missing).
    """
    from .targets import SOLUTIONS_DIR

    course_dir, solutions_dir = Path(course_dir), Path(solutions_dir or SOLUTIONS_DIR)
    written = []
    config = course_dir / CONFIG_FILE
    if not config.exists():
        course_dir.mkdir(parents=True, exist_ok=True)
        config.write_text(NBGRADER_CONFIG, encoding="utf-8")
        written.append(config)
    for episode in registry.all_episodes():
        path = course_dir / "source" / episode.id / f"{episode.id}.ipynb"
        text = (solutions_dir / f"{episode.module}.py").read_text(encoding="utf-8")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(episode_notebook(episode, text, seed), indent=1, ensure_ascii=False) + "\n",
                        encoding="utf-8")
        written.append(path)
    return written


def episode_notebook(episode, text: str, seed: int = DEFAULT_SEED) -> dict:
    """The nbgrader source notebook (nbformat 4 as a dict) of one episode.

    Args:
        episode (registry.Episode): The episode (title, video, exercises and checks).
        text: Source of its solutions module.
        seed: Seed of the hidden checks.
    """
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    owners = {owner for _, _, owner in regions(text)}
    exercises = {ex.name: ex for ex in episode.exercises}
    plots = {}
    for plot in PLOTS.get(episode.id, []):
        plots.setdefault(plot.after, []).append(plot)

    imports, given_names, body, last_import = [], [], [], 0
    pending: list[str] = []  # consecutive top-level statements that are not defs: one given cell
    for node in tree.body[1 if ast.get_docstring(tree) else 0:]:
        source = "".join(lines[_first_line(node):_end_line(node, lines)]).rstrip()
        if isinstance(node, ast.ImportFrom) and node.level:
            given_names += _given(node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if imports and node.lineno > last_import + 1:  # keep the module's grouping of imports
                imports.append("")
            imports.append(source)
            last_import = node.end_lineno
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if pending:
                body.append(_code(episode.id, "\n\n".join(pending), f"given-{len(body)}", "given"))
                pending = []
            body += _definition(episode, node, source, exercises.get(node.name), node.name in owners, seed)
            for plot in plots.pop(node.name, []):
                body += _plot(episode.id, plot, len(body))
        else:
            pending.append(source)
    if pending:
        body.append(_code(episode.id, "\n\n".join(pending), f"given-{len(body)}", "given"))
    missing = set(exercises) - {n.name for n in tree.body if hasattr(n, "name")}
    if missing or plots:
        raise AuthoringError(f"{episode.id}: no top-level definition of {', '.join(sorted(missing | set(plots)))} "
                             "(exercises in the registry, plots in notebook_content.PLOTS)")
    cells = [_header(episode, ast.get_docstring(tree) or ""), _setup(episode.id, imports, given_names)] + body
    return {"cells": cells, "metadata": {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}


def _first_line(node) -> int:
    """0-based first line of a top-level statement, decorators included."""
    return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]) - 1


def _end_line(node, lines: list[str]) -> int:
    """End (exclusive) of a top-level statement, with the indented comments after its last line
    (``### END SOLUTION`` follows the last statement of a function)."""
    end = node.end_lineno
    while end < len(lines) and (not lines[end].strip() or lines[end][0].isspace()):
        end += 1
    return end


def _given(node: ast.ImportFrom) -> list[str]:
    """``from .m import a, b as c`` → ``['a = given("m").a', 'c = given("m").b']``."""
    if node.level != 1:
        raise AuthoringError(f"line {node.lineno}: only imports from the same package (one dot) are supported")
    if node.module is None:  # from . import config
        return [f'{a.asname or a.name} = given("{a.name}")' for a in node.names]
    return [f'{a.asname or a.name} = given("{node.module}").{a.name}' for a in node.names]


# --- cells -------------------------------------------------------------------------------------


def _cell(kind: str, source: str, cell_id: str, role: str, nbgrader: dict | None = None) -> dict:
    """One cell; ``nbgrader`` metadata only on the cells nbgrader must know (see :func:`_code`)."""
    metadata = {"dsgrade": {"role": role}}
    if nbgrader is not None:
        metadata["nbgrader"] = {"grade": False, "grade_id": cell_id, "locked": False, "schema_version": 3,
                                "solution": False, "task": False, **nbgrader}
    cell = {"cell_type": kind, "id": cell_id[-64:], "metadata": metadata, "source": source.splitlines(keepends=True)}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def _code(episode_id: str, source: str, name: str, role: str, **nbgrader) -> dict:
    """A code cell. The course's code (setup, given, tests) is locked: autograding restores it as
    generated. Solution cells are the student's; plot cells are free to play with, so nbgrader
    need not track them (every tracked cell costs database work in each nbgrader step)."""
    if role in ("setup", "given", "tests"):
        nbgrader = {"locked": True, **nbgrader}
    return _cell("code", source, f"{episode_id}-{name}", role, nbgrader or None)


def _markdown(episode_id: str, source: str, name: str, role: str) -> dict:
    return _cell("markdown", source, f"{episode_id}-{name}", role)


def _header(episode, module_doc: str) -> dict:
    number = "Capstone" if episode.id == "capstone" else f"Episode {int(episode.id[2:])}"
    try:
        goals = GOALS[episode.id]
    except KeyError:
        raise AuthoringError(f"{episode.id}: add its learning goals to autograder/notebook_content.py") from None
    intro = module_doc.split("\n\n", 1)[1].strip() if "\n\n" in module_doc else ""
    parts = [f"# {number} · {episode.title}"]
    parts += [f"Video: [{episode.title}]({episode.video})"] if episode.video else []  # the capstone has none
    parts += ["**Learning goals**\n\n" + "\n".join(f"- {g}" for g in goals)]
    parts += [intro] if intro else []
    parts.append(f"**How this notebook works.** Write your code in each cell that says `YOUR CODE HERE`, then run the "
                 f"check cell below it: it grades your code on the public checks and explains what differs. Hidden "
                 f"checks run when your notebook is graded. {episode.max_score:g} points in all.")
    return _markdown(episode.id, "\n\n".join(parts), "header", "header")


def _setup(episode_id: str, imports: list[str], given_names: list[str]) -> dict:
    future = [i for i in imports if i.startswith("from __future__")]
    lines = future + [i for i in imports if i not in future]  # a __future__ import must come first
    lines += ["", "from autograder.notebook_api import check, given, when_implemented"]
    if given_names:
        lines += ["", "# Code from earlier episodes (the course's own; see autograder.notebook_api.given)"]
        lines += given_names
    return _code(episode_id, "\n".join(lines).strip("\n"), "setup", "setup")


def _definition(episode, node, source: str, exercise, has_solution: bool, seed: int) -> list[dict]:
    """The cells of one top-level def/class: docstring, code, and its test cell if it is graded."""
    ep = episode.id
    if not has_solution and exercise is None:
        return [_code(ep, source, f"given-{node.name}", "given")]
    cells = [_markdown(ep, _exercise_markdown(node, exercise), f"{node.name}-doc", "doc")]
    if has_solution:
        cells.append(_code(ep, source, node.name, "solution", solution=True))
    else:
        cells.append(_code(ep, source, f"given-{node.name}", "given"))
    if exercise is not None and exercise.checks:
        cells.append(_code(ep, _test_source(exercise, seed), f"{node.name}-checks", "tests",
                           grade=True, points=exercise.max_score))
    return cells


def _test_source(exercise, seed: int) -> str:
    """The test cell: public checks, hidden ones in a hidden block, and the points as the cell's value."""
    call = f'check("{exercise.id}", {exercise.name}'
    lines = [f"score = {call})"]
    if any(c.hidden for c in exercise.checks):
        lines += ["### BEGIN HIDDEN TESTS", f"score += {call}, hidden=True, seed={seed})", "### END HIDDEN TESTS"]
    return "\n".join(lines + ["score  # the points nbgrader records"])


def _plot(episode_id: str, plot, index: int) -> list[dict]:
    return [_markdown(episode_id, f"### {plot.title}", f"plot{index}-title", "plot"),
            _code(episode_id, plot.code.rstrip("\n"), f"plot{index}", "plot")]


# --- docstrings as markdown ---------------------------------------------------------------------


def _exercise_markdown(node, exercise) -> str:
    """Heading with points, the docstring, and for a class the docstring of the method to write."""
    points = f" ({exercise.max_score:g} points)" if exercise is not None and exercise.checks else ""
    method = getattr(exercise, "method", None)
    heading = f"## `{node.name}`" + (f": write `{method}`" if method else "") + points
    parts = [heading, docstring_markdown(ast.get_docstring(node) or "")]
    for item in node.body if method else []:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == method:
            parts += [f"### `{node.name}.{method}`", docstring_markdown(ast.get_docstring(item) or "")]
    return "\n\n".join(p for p in parts if p)


def docstring_markdown(doc: str) -> str:
    """A Google-style docstring as markdown: prose as is, arguments as a list, examples as code.

    Example:
        >>> print(docstring_markdown("Adds.\\n\\nArgs:\\n    a (int): First.\\n\\nReturns:\\n    int: The sum."))
        Adds.
        <BLANKLINE>
        **Args**
        <BLANKLINE>
        - `a` (int): First.
        <BLANKLINE>
        **Returns**
        <BLANKLINE>
        int: The sum.
    """
    sections, title, current = [], None, []
    for line in doc.splitlines():
        m = _SECTION.match(line)
        if m:
            sections.append((title, current))
            title, current = m.group(1), []
        else:
            current.append(line)
    sections.append((title, current))
    out = []
    for title, body in sections:
        text = _dedent(body)
        if not text.strip():
            continue
        if title is None:
            out.append(text.strip())
        elif title.startswith("Example"):
            out.append(f"**{title}**\n\n```python\n{text.strip()}\n```")
        elif title in ("Args", "Arguments", "Attributes"):
            out.append(f"**{title}**\n\n" + "\n".join(_entries(text)))
        else:
            out.append(f"**{title}**\n\n" + " ".join(text.split()))
    return "\n\n".join(out)


def _dedent(lines: list[str]) -> str:
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(indents, default=0)
    return "\n".join(line[cut:] for line in lines)


def _entries(text: str) -> list[str]:
    """``name (type): text`` entries (continuation lines indented deeper) as markdown list items."""
    items: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0].isspace() and items:
            items[-1] += " " + line.strip()
            continue
        m = _ENTRY.match(line)
        items.append(f"- `{m['name']}`{' ' + m['type'] if m['type'] else ''}: {m['text']}" if m else f"- {line}")
    return items
