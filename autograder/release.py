"""``dsgrade release OUT_DIR``: the project students get — exercises, the grader, public fixtures; no answers.

The release is a complete, installable project (``pip install -e OUT_DIR``) holding
``exercises/``, the grader, and the reference's recorded outputs for the *public*
checks only, with the outputs of the misconception variants on those cases so that
hints still work. It holds no ``solutions/``, no expected value of a hidden check,
and no code of a misconception variant: a variant is the reference with one
mistake, so :func:`strip_variants` empties every function of the checks modules
that no probe needs (keeping names and hints, which the report shows).
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

from . import registry, targets
from .reference import PACKAGED_FIXTURES, record_fixtures

STUB = "raise NotImplementedError('not shipped in a student release')"
SKIPPED_FILES = {".dsgrade-sync.json"}  # exercises/' manifest serves `dsgrade sync`, which needs solutions/


class ReleaseError(Exception):
    """The release cannot be built (not a checkout, or the output folder is in use)."""


def build_release(out_dir: Path, seed: int) -> list[Path]:
    """Writes the student project to ``out_dir`` (which must not exist or be empty).

    Returns:
        list[Path]: The files written.
    """
    out_dir = Path(out_dir)
    pyproject = targets.ROOT / "pyproject.toml"
    if not targets.SOLUTIONS_DIR.is_dir() or not pyproject.is_file():
        raise ReleaseError("dsgrade release runs in a checkout of the course (with solutions/ and pyproject.toml)")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ReleaseError(f"{out_dir} is not empty; give a new folder")
    package = Path(__file__).resolve().parent
    out_pkg = out_dir / "autograder"
    shutil.copytree(package, out_pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", PACKAGED_FIXTURES.name,
                                                                    "stubs"))
    checks = {p.stem: p.read_text() for p in sorted((package / "checks").glob("*.py"))}
    for name, source in strip_variants(checks).items():
        (out_pkg / "checks" / f"{name}.py").write_text(source)
    for folder in (out_dir / "exercises", out_pkg / "stubs"):  # the stubs: `dsgrade reset` restores from them
        shutil.copytree(targets.EXERCISES_DIR, folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc",
                                                                                      *SKIPPED_FILES))
    record_fixtures(registry.all_episodes(), seed, out_pkg / PACKAGED_FIXTURES.name, public_only=True)
    (out_dir / "pyproject.toml").write_text(release_pyproject(pyproject.read_text()))
    (out_dir / "README.md").write_text(student_readme(seed))
    (out_dir / ".gitignore").write_text("__pycache__/\n*.pyc\n*.egg-info/\n")
    return sorted(p for p in out_dir.rglob("*") if p.is_file())


def release_pyproject(text: str) -> str:
    """The course's pyproject.toml without solutions/, tests or their dependencies, with the fixtures."""
    packages = 'packages = ["autograder", "autograder.checks", "solutions", "exercises"]'
    data = 'autograder = ["pytest.ini", "report_schema.json"'
    for needed in (packages, data, "test = ["):
        if needed not in text:
            raise ReleaseError(f"pyproject.toml has changed: cannot find {needed!r}")
    text = text.replace(packages, 'packages = ["autograder", "autograder.checks", "exercises"]')
    text = text.replace(data, f'autograder = ["{PACKAGED_FIXTURES.name}", "stubs/*.py", "pytest.ini", "report_schema.json"')
    text = re.sub(r"\ntest = \[.*?\]\n", "\n", text, flags=re.S)  # the course's own test suite is not shipped
    text = text.replace('exercises = [".dsgrade-sync.json"]\n', "")
    return text.replace('description = "', 'description = "Student release: ', 1)


# --- the checks without their variants -------------------------------------------------------------------------


def strip_variants(sources: dict[str, str]) -> dict[str, str]:
    """The checks modules with the body of every function no probe needs replaced by a stub.

    A function is *needed* when a check's probe (or its ``setup``), or module code other than a
    misconception's registration, reaches it by name, also across modules (``from .ep07 import
    inputs``, ``ep06.dropout_in_training``). Misconception registrations, direct or through a
    helper that makes them (a *registrar*, kept whole), keep their names and hints but register a
    stub. Assignments and imports stay as they are.

    Args:
        sources: Module name (``"ep05"``) → source of ``autograder/checks/<name>.py``.

    Returns:
        dict[str, str]: Module name → released source.
    """
    trees = {name: ast.parse(src) for name, src in sources.items()}
    imports = {name: _sibling_imports(tree) for name, tree in trees.items()}
    registrars = {(name, n.name) for name, tree in trees.items() for n in tree.body
                  if isinstance(n, ast.FunctionDef) and any(_is_registration(sub) for sub in ast.walk(n))}
    needed = {name: {"EPISODE"} for name in trees}  # the registry reads EPISODE itself
    changed = True
    while changed:  # names needed in one module make the names they use needed, here and in siblings
        changed = False
        for name, tree in trees.items():
            defs = _definitions(tree)
            roots = _roots(tree, lambda call: _callee(call, name, imports[name]) in registrars)
            for node in roots + [defs[n] for n in needed[name] if n in defs]:
                for ref_module, ref in _references(node, name, imports[name]):
                    if ref_module in trees and ref not in needed[ref_module]:
                        needed[ref_module].add(ref)
                        changed = True
    released = {}
    for name, tree in trees.items():
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name not in needed[name] \
                    and not _is_check(node) and (name, node.name) not in registrars:
                node.body = [ast.parse(STUB).body[0]] if isinstance(node, ast.FunctionDef) else [ast.Pass()]
            for call in ast.walk(node):
                if _is_registration(call):
                    call.args = [ast.parse("lambda *args, **kwargs: None", mode="eval").body]
        header = ("# Generated by `dsgrade release` from the course's checks: the probes are as they are,\n"
                  "# the misconception variants (the reference with one mistake) are not shipped.\n")
        released[name] = header + ast.unparse(ast.fix_missing_locations(tree)) + "\n"
    return released


def _is_check(node) -> bool:
    return any(isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and d.func.attr == "check"
               for d in getattr(node, "decorator_list", []))


def _is_variant(node) -> bool:
    return any(_is_misconception(d) for d in getattr(node, "decorator_list", []))


def _is_misconception(node) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "misconception"


def _is_registration(node) -> bool:
    """``ex.misconception(name, hint)(function)``: a variant registered without the decorator syntax."""
    return isinstance(node, ast.Call) and _is_misconception(node.func)


def _definitions(tree) -> dict[str, ast.AST]:
    """Top-level functions and classes of a module by name (the things that can be stubbed)."""
    return {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def _callee(call, module: str, imports: tuple[dict, dict]) -> tuple[str, str] | None:
    """(module, name) of the function a call calls by name, ``None`` for anything else."""
    if isinstance(call, ast.Call) and isinstance(call.func, ast.Name):
        return imports[0].get(call.func.id, (module, call.func.id))
    return None


def _roots(tree, calls_registrar) -> list[ast.AST]:
    """What runs whatever the probes need: checks, and module code other than definitions and
    variant registrations (``ex.misconception(…)(…)``, a call of a function that makes such
    registrations, or a loop of these)."""
    def registers(stmt) -> bool:
        return isinstance(stmt, ast.Expr) and (_is_registration(stmt.value) or calls_registrar(stmt.value))

    roots = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            if _is_check(node):
                roots.append(node)
        elif isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign, ast.AnnAssign)):
            continue
        elif not (registers(node) or isinstance(node, ast.For) and all(map(registers, node.body))):
            roots.append(node)
    return roots


def _sibling_imports(tree) -> tuple[dict, dict]:
    """What a checks module imports from its siblings: ``{name: (module, name)}`` for
    ``from .ep07 import inputs`` and ``{alias: module}`` for ``from . import ep06``."""
    names, modules = {}, {}
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.level == 1:
            for alias in stmt.names:
                if stmt.module:
                    names[alias.asname or alias.name] = (stmt.module, alias.name)
                else:
                    modules[alias.asname or alias.name] = alias.name
    return names, modules


def _references(node, module: str, imports: tuple[dict, dict]) -> list[tuple[str, str]]:
    """(module, name) pairs that ``node`` uses: its own module's names, and siblings' through imports."""
    names, modules = imports
    refs = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):  # `for _ in …` uses no function `_`
            refs.append(names.get(sub.id, (module, sub.id)))
        elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id in modules:
            refs.append((modules[sub.value.id], sub.attr))
    return refs


def student_readme(seed: int) -> str:
    """The README of the student release: set-up, the episodes, how to work an exercise, hidden checks."""
    rows = []
    public_total = hidden_total = 0.0
    for ep in registry.all_episodes():
        public = sum(chk.points * len(chk.cases) for ex in ep.exercises for chk in ex.checks if not chk.hidden)
        hidden = ep.max_score - public
        public_total, hidden_total = public_total + public, hidden_total + hidden
        video = f"[{ep.title}]({ep.video})" if ep.video else ep.title
        names = ", ".join(f"`{ex.name}`" for ex in ep.exercises)
        rows.append(f"| {ep.id} | {video} | `{ep.module}.py` | {names} | {public:g} | {hidden:g} |")
    table = "\n".join(rows)
    return f"""# DeepSeek from scratch — your exercises

The exercises of the 20-episode course *DeepSeek Architecture – Full Educational Series*, from
self-attention to DeepSeek's Multi-head Latent Attention and Mixture of Experts, with the grader
that checks them: `dsgrade`.

## Set-up

```bash
python -m pip install torch==2.13.0 && python -m pip install -e . && dsgrade
```

(Any PyTorch ≥ 2.4 works; for a CPU-only build elsewhere:
`pip install torch --index-url https://download.pytorch.org/whl/cpu`.) On a fresh copy `dsgrade` grades
the untouched stubs: every exercise is `not implemented`, and the last line says where to start.

## How to work an exercise

Each episode is one file in `exercises/`. Read the docstring (shapes, dtypes, an example), replace
the `raise NotImplementedError(...)` line with your code, and grade the episode: `dsgrade ep05`, or one
exercise: `dsgrade ep05.scaled_dot_product_attention`. For every failed check you get what differs
(shape, dtype, NaN, the largest error and where) and, when your output matches a known mistake, a hint
that names it. `dsgrade list` shows every exercise with its points and your last status.

Later episodes import your earlier work (episode 6 uses your episode-5 attention, the capstone your
RMSNorm, RoPE, MLA and MoE), so work in order.

## Public and hidden checks

Every exercise has **public checks**, which `dsgrade` runs here ({public_total:g} points in all,
seed {seed}), and **hidden checks** ({hidden_total:g} points), which your instructor runs when grading,
on inputs you do not see. Hidden checks test the same contract as the docstrings on other sizes,
dtypes and edge cases: code that is right (not only right on the public inputs) passes them. The score
line reads "public checks: X/Y; hidden checks: Z points graded by your instructor".

## The episodes

| ep | video | file | exercises | public points | hidden points |
| --- | --- | --- | --- | --- | --- |
{table}

## Notes

- Your code runs in a separate, sandboxed process, with a time limit per check (`--timeout`) and a
  memory limit (`--memory`). A crash or an endless loop costs that check its points, nothing else.
- `dsgrade --json report.json` writes the full report; `dsgrade --help` lists every option.
- In Jupyter: `python -m pip install -e ".[jupyter]"`, then the notebooks your instructor gives you;
  their check cells run the same public checks.
"""
