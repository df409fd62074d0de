"""``dsgrade release``: what students get holds no answers, installs on its own and grades as the course does."""

from __future__ import annotations

import ast
import io
import json
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
from conftest import ROOT, SOLUTIONS, _env, copy_solutions

from autograder import registry
from autograder.release import STUB
from autograder.values import decode

# A solution line shorter than this is an idiom (`else:`, `return out`, `t = x.shape[1]`) that any code has.
MIN_LINE = 20
RELEASE_SEED = "777"  # not the default: students grade with it without being told it


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("release") / "course"
    done = subprocess.run([sys.executable, "-m", "autograder", "release", str(out), "--seed", RELEASE_SEED],
                          cwd=ROOT, env=_env(),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


def _solution_lines() -> set[str]:
    lines, inside = set(), False
    for path in SOLUTIONS.glob("*.py"):
        for line in path.read_text().splitlines():
            if "### BEGIN SOLUTION" in line or "### END SOLUTION" in line:
                inside = "BEGIN" in line
            elif inside and len(line.strip()) >= MIN_LINE and not line.strip().startswith("#"):
                lines.add(line.strip())
    return lines


def _code_of(source: str) -> str:
    """Python source without its strings and comments: a hint may name the fix ("return table[token_ids]
    without scaling"); code may not hold the reference's."""
    tokens = [(tok.type, '""' if tok.type == tokenize.STRING else "" if tok.type == tokenize.COMMENT else tok.string)
              for tok in tokenize.generate_tokens(io.StringIO(source).readline)]
    return tokenize.untokenize(tokens)


def _squeezed(text: str) -> str:
    return "".join(text.split())  # spacing aside: `a+b` is `a + b`


def test_the_release_holds_no_solution_and_no_line_of_one(release):
    assert {p.name for p in release.iterdir()} == {"README.md", "pyproject.toml", ".gitignore", "autograder",
                                                   "exercises"}
    handed_out = "".join(p.read_text() for p in (ROOT / "exercises").glob("*.py"))  # docstrings spell out steps
    lines = {line for line in _solution_lines() if line not in handed_out}
    assert len(lines) > 200
    for path in release.rglob("*"):
        if path.is_file() and path.suffix != ".bin":
            text = _squeezed(_code_of(path.read_text()) if path.suffix == ".py" else path.read_text())
            found = [line for line in lines if _squeezed(line) in text]  # inside a longer line too (`….to()`)
            assert not found, (path, sorted(found)[:3])


def test_no_misconception_variant_is_shipped(release):
    for path in (release / "autograder" / "checks").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and any("misconception" in ast.unparse(d) for d in node.decorator_list):
                assert ast.unparse(node.body[0]) == STUB, (path.name, node.name)


def test_the_fixtures_hold_the_public_checks_only(release):
    data = decode((release / "autograder" / "public_fixtures.bin").read_bytes(), max_header=1 << 30)
    assert data["public_only"] is True
    public = {chk.item_id(c) for ep in registry.all_episodes() for ex in ep.exercises for chk in ex.checks
              if not chk.hidden for c in chk.cases}
    assert set(data["items"]) == public
    assert any(entry["misconceptions"] for entry in data["items"].values()), "hints need the variants' outputs"


def test_the_released_checks_are_the_courses_checks_with_the_same_hints(release):
    """Same check ids, points, visibility, and misconception names and hints: only the variants' code is gone."""
    code = ("import json; from autograder import registry; print(json.dumps([[ex.id, "
            "[[chk.item_id(c), chk.points, chk.hidden] for chk in ex.checks for c in chk.cases], "
            "[[m.name, m.hint] for m in ex.misconceptions]] for ep in registry.all_episodes() for ex in ep.exercises]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=release, env=dict(_env(), PYTHONPATH=str(release)),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ours = [[ex.id, [[chk.item_id(c), chk.points, chk.hidden] for chk in ex.checks for c in chk.cases],
             [[m.name, m.hint] for m in ex.misconceptions]] for ep in registry.all_episodes() for ex in ep.exercises]
    assert json.loads(done.stdout) == ours


@pytest.fixture(scope="module")
def student_env(release, tmp_path_factory):
    """A fresh virtual environment where the release is installed the way its README says (torch and the
    other dependencies are lent from this environment, without its editable install of the course)."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    ours = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "torch").is_dir())
    (site / "lent.pth").write_text(f"{ours}\n")  # a path line only: our own .pth files are not run
    py = venv / "bin" / "python"
    done = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "-e", str(release)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(_env(), PATH=f"{venv / 'bin'}:/usr/bin:/bin")
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_a_student_installs_it_and_grades_the_stubs(release, student_env):
    assert _run(student_env, "python", "-c", "import solutions", cwd=release).returncode != 0
    done = _run(student_env, "dsgrade", "--json", "r.json", cwd=release)
    assert done.returncode == 1, done.stderr
    report = json.loads((release / "r.json").read_text())
    hidden = sum(chk.points * len(chk.cases) for ep in registry.all_episodes() for ex in ep.exercises
                 for chk in ex.checks if chk.hidden)
    assert report["score"] == 0 and report["instructor_graded"]["points"] == hidden
    assert report["seed"] == int(RELEASE_SEED)
    assert not any(c["hidden"] for ex in report["exercises"] for c in ex["checks"])
    assert f"hidden checks: {hidden:g} points graded by your instructor" in done.stdout
    assert "Start with ep01.count_parameters" in done.stdout


def test_the_release_grades_correct_and_wrong_code_as_the_course_does(release, student_env, tmp_path):
    sub = copy_solutions(tmp_path / "sub")
    done = _run(student_env, "dsgrade", "ep05", "--target", str(sub), "--json", str(tmp_path / "r.json"), cwd=release)
    report = json.loads((tmp_path / "r.json").read_text())
    assert done.returncode == 0 and report["score"] == report["max_score"] > 0
    source = (sub / "ep05_self_attention.py").read_text().replace("/ math.sqrt(q.shape[-1])", "")
    assert source != (sub / "ep05_self_attention.py").read_text()
    (sub / "ep05_self_attention.py").write_text(source)
    done = _run(student_env, "dsgrade", "ep05.scaled_dot_product_attention", "--target", str(sub), cwd=release)
    assert done.returncode == 1 and "hint: The scores were not scaled" in done.stdout


def test_notebook_checks_work_from_the_release(release, student_env, tmp_path):
    """The notebooks' check cells use the release's public fixtures; hidden checks say who grades them."""
    code = (f"import sys; sys.path.insert(0, {str(SOLUTIONS)!r}); import ep04_attention_basics as m; "
            "from autograder.notebook_api import check; "
            "print('points', check('ep04.attention_scores', m.attention_scores, namespace=vars(m)))\n"
            "try:\n    check('ep04.attention_scores', m.attention_scores, hidden=True, namespace=vars(m))\n"
            "except RuntimeError as e:\n    print('refused:', e)")
    done = _run(student_env, "python", "-c", code, cwd=tmp_path)
    public = sum(chk.points * len(chk.cases) for ex in registry.load_episode("ep04").exercises
                 if ex.name == "attention_scores" for chk in ex.checks if not chk.hidden)
    assert f"points {public:g}" in done.stdout.replace(".0\n", "\n"), done.stdout + done.stderr
    assert "refused: the hidden checks of ep04.attention_scores are graded by your instructor" in done.stdout


def test_instructor_commands_refuse_in_a_release(release, student_env):
    done = _run(student_env, "dsgrade", "batch", "x", "--out", "y", cwd=release)
    assert done.returncode == 2 and "needs the course's solutions/" in done.stderr


def test_list_and_reset_in_the_release(release, student_env, tmp_path):
    listed = _run(student_env, "dsgrade", "list", cwd=release)
    assert listed.returncode == 0 and "hidden points (instructor)" in listed.stdout
    assert "of hidden checks graded by your instructor" in listed.stdout
    mine = tmp_path / "mine"
    shutil.copytree(release / "exercises", mine)
    path = mine / "ep04_attention_basics.py"
    path.write_text(path.read_text().replace('raise NotImplementedError("ep04.attention_scores")', "return x @ x.mT"))
    done = _run(student_env, "dsgrade", "reset", "ep04.attention_scores", "--target", str(mine), cwd=release)
    assert done.returncode == 0, done.stderr
    assert path.read_text() == (release / "exercises" / "ep04_attention_basics.py").read_text()
