"""The nbgrader course: built from solutions/ and the registry, and taken through the real cycle.

The slow part is kernels (a kernel that imports torch takes seconds to start), so it runs in two
background processes started with the module's first test (:func:`background`): the instructor's
nbgrader cycle (``tests/notebook_cycle.py``: ``generate_assignment`` for every episode,
``autograde`` of source notebooks, released notebooks and one known mistake, ``generate_feedback``,
``export``) and ``jupyter execute`` (nbclient) of :data:`IN_KERNEL`. Meanwhile this process builds
the course and runs every notebook's code in-process; the tests that read the background results
come last and wait for them.
"""

from __future__ import annotations

import contextlib
import csv
import html
import io
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT
from notebook_cycle import AUTOGRADED, MISTAKEN, SUBMISSIONS, mistaken_exercise, notebook_path
from test_notebook_api import expected_strings

from autograder import cli, registry
from autograder.authoring import AuthoringError, make_stub, regions
from autograder.grading import grade_locally
from autograder.notebook_api import DEFAULT_SEED
from autograder.notebook_content import GOALS, PLOTS, Plot
from autograder.notebooks import CONFIG_FILE, build_course, episode_notebook
from autograder.reference import LiveReference

EPISODES = registry.episode_ids()
IN_KERNEL = [e for e in ("ep04", "ep06") if e in EPISODES]  # run end to end with nbclient
CYCLE_TIMEOUT = 1200  # seconds; the cycle takes about a minute on two idle cores


def cells(nb, role: str) -> list:
    return [c for c in nb.cells if c.metadata.get("dsgrade", {}).get("role") == role]


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("course")
    assert cli.main(["notebooks", str(path)]) == 0
    return path


@pytest.fixture(scope="module", autouse=True)
def background(course, tmp_path_factory):
    """Starts the nbgrader cycle and the nbclient runs as background processes (see the module docstring).

    Yields:
        dict: ``cycle`` and ``execute`` → ``(process, log file, output)``.
    """
    work = tmp_path_factory.mktemp("background")
    bin_dir = Path(sys.executable).parent  # nbgrader calls `alembic`, which lives next to this Python
    env = dict(os.environ, PATH=os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]))
    executed = work / "executed"
    executed.mkdir()
    for episode in IN_KERNEL:
        shutil.copy(notebook_path(course, "source", episode), executed / f"{episode}.ipynb")
    commands = {
        "cycle": ([sys.executable, str(Path(__file__).with_name("notebook_cycle.py")), str(course),
                   str(work / "cycle.json")], work / "cycle.json"),
        "execute": ([str(bin_dir / "jupyter-execute"), "--inplace", "--allow-errors", "--timeout=300",
                     *(f"{e}.ipynb" for e in IN_KERNEL)], executed),
    }
    jobs = {}
    for name, (command, output) in commands.items():
        log = open(work / f"{name}.log", "w+")
        jobs[name] = (subprocess.Popen(command, cwd=executed, env=env, stdout=log, stderr=subprocess.STDOUT),
                      log, output)
    yield jobs
    for process, log, _ in jobs.values():
        if process.poll() is None:
            process.kill()
        process.wait()
        log.close()


def finished(background, name: str) -> Path:
    """Waits for a background job and returns its output; its log explains a failure."""
    process, log, output = background[name]
    if process.wait(timeout=CYCLE_TIMEOUT) != 0:
        log.seek(0)
        pytest.fail(f"{name} failed:\n{log.read()[-5000:]}")
    return output


def read(path: Path):
    return nbformat.read(str(path), as_version=4)


# --- the generated notebooks ---------------------------------------------------------------------


def test_course_has_a_config_and_a_valid_notebook_per_episode(course):
    assert (course / CONFIG_FILE).exists()
    assert sorted(p.parent.name for p in (course / "source").glob("*/*.ipynb")) == sorted(EPISODES)
    for episode in EPISODES:
        nbformat.validate(read(notebook_path(course, "source", episode)))


@pytest.mark.parametrize("episode_id", EPISODES)
def test_notebook_follows_the_solutions_and_the_registry(course, episode_id):
    episode = registry.load_episode(episode_id)
    nb = read(notebook_path(course, "source", episode_id))
    header = cells(nb, "header")[0].source
    assert episode.title in header and episode.video in header and all(g in header for g in GOALS[episode_id])
    solutions = {c.metadata.nbgrader.grade_id: c.source for c in cells(nb, "solution")}
    tests = {c.metadata.nbgrader.grade_id: c for c in cells(nb, "tests")}
    text = (ROOT / "solutions" / f"{episode.module}.py").read_text()
    assert {f"{episode_id}-{owner}" for _, _, owner in regions(text)} == set(solutions)
    for source in solutions.values():
        assert "### BEGIN SOLUTION" in source and "### END SOLUTION" in source
    for ex in episode.exercises:
        test = tests[f"{episode_id}-{ex.name}-checks"]
        assert test.metadata.nbgrader.grade and test.metadata.nbgrader.locked
        assert test.metadata.nbgrader.points == ex.max_score
        assert f'check("{ex.id}", {ex.name})' in test.source
        assert ("### BEGIN HIDDEN TESTS" in test.source) == any(c.hidden for c in ex.checks)
        docs = "\n".join(c.source for c in cells(nb, "doc"))
        assert f"## `{ex.name}`" in docs
    assert sum(c.metadata.nbgrader.points for c in tests.values()) == episode.max_score
    assert len(cells(nb, "plot")) == 2 * len(PLOTS.get(episode_id, []))


def test_relative_imports_become_given_code(course):
    for episode in registry.all_episodes():
        text = (ROOT / "solutions" / f"{episode.module}.py").read_text()
        setup = cells(read(notebook_path(course, "source", episode.id)), "setup")[0].source
        assert "from ." not in setup
        assert ("from ." in text) == ("given(" in setup)


def test_rebuilding_is_deterministic_and_keeps_the_instructors_config(course, tmp_path):
    (tmp_path / CONFIG_FILE).write_text("c = get_config()  # mine\n")
    written = build_course(tmp_path)
    assert (tmp_path / CONFIG_FILE).read_text() == "c = get_config()  # mine\n"
    assert tmp_path / CONFIG_FILE not in written
    for episode in EPISODES:
        path = notebook_path(tmp_path, "source", episode)
        assert path.read_bytes() == notebook_path(course, "source", episode).read_bytes()


SOURCE = '''"""Episode 99 — a test.

What it teaches.
"""

import math

from . import config
from .ep05_self_attention import scaled_dot_product_attention as sdpa

SCALE = 2.0


def f(x):
    """Doubles.

    Args:
        x (float): The input,
            on two lines.

    Returns:
        float: Twice x.

    Example:
        >>> f(1.0)
        2.0
    """
    ### BEGIN SOLUTION
    return SCALE * x
    ### END SOLUTION


def helper():
    return math.pi
'''


def test_a_module_is_cut_into_cells_in_order(monkeypatch):
    episode = registry.Episode("ep99", "A test", video="https://example.org/v", module="ep99_test")
    exercise = episode.exercise("f")
    exercise.check(registry.case(x=1))(lambda impl, c, gen: impl.f(1.0))
    exercise.check(registry.case(x=2), hidden=True)(lambda impl, c, gen: impl.f(2.0))
    with pytest.raises(AuthoringError, match="learning goals"):
        episode_notebook(episode, SOURCE)
    monkeypatch.setitem(GOALS, "ep99", ["Double a number."])
    nb = episode_notebook(episode, SOURCE, seed=7)
    roles = [c["metadata"]["dsgrade"]["role"] for c in nb["cells"]]
    assert roles == ["header", "setup", "given", "doc", "solution", "tests", "given"]
    source = ["".join(c["source"]) for c in nb["cells"]]
    assert "What it teaches." in source[0] and "Double a number." in source[0]
    assert source[1] == ("import math\n\nfrom autograder.notebook_api import check, given, when_implemented\n\n"
                         "# Code from earlier episodes (the course's own; see autograder.notebook_api.given)\n"
                         'config = given("config")\n'
                         'sdpa = given("ep05_self_attention").scaled_dot_product_attention')
    assert source[2] == "SCALE = 2.0"
    assert "- `x` (float): The input, on two lines." in source[3] and "```python\n>>> f(1.0)" in source[3]
    assert source[4].endswith("### END SOLUTION") and source[6].startswith("def helper")
    assert source[5] == ('score = check("ep99.f", f)\n### BEGIN HIDDEN TESTS\n'
                         'score += check("ep99.f", f, hidden=True, seed=7)\n### END HIDDEN TESTS\n'
                         "score  # the points nbgrader records")
    assert nb["cells"][5]["metadata"]["nbgrader"] == {"grade": True, "grade_id": "ep99-f-checks", "locked": True,
                                                      "points": 2.0, "schema_version": 3, "solution": False,
                                                      "task": False}
    monkeypatch.setitem(PLOTS, "ep99", [Plot("nowhere", "A picture", "pass")])
    with pytest.raises(AuthoringError, match="nowhere"):
        episode_notebook(episode, SOURCE)
    with pytest.raises(AuthoringError, match="one dot"):
        episode_notebook(episode, SOURCE.replace("from . import config", "from ..x import config"))


def test_every_plot_compiles_and_every_episode_has_learning_goals():
    for episode_id, plots in PLOTS.items():
        for plot in plots:
            compile(plot.code, f"{episode_id}:{plot.title}", "exec")
            assert "when_implemented()" in plot.code and "plt.show()" in plot.code
    assert set(GOALS) >= set(EPISODES)


def run_in_process(nb) -> dict:
    """Runs a notebook's code cells in this process, as a kernel would; returns what the cells did.

    (Cheap: torch is loaded already. Kernels, where stderr matters to nbgrader, run in the background.)

    Returns:
        dict: ``scores`` (grade_id → the test cell's value), ``points`` (grade_id → max),
        ``stdout`` per cell index and ``figures`` made by plot cells.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    namespace = {"__name__": "__main__"}
    done = {"scores": {}, "points": {}, "stdout": {}, "figures": 0}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(cell.source, f"<cell {i}>", "exec"), namespace)
        done["stdout"][i] = out.getvalue()
        if cell.metadata.get("nbgrader", {}).get("grade"):
            done["scores"][cell.metadata.nbgrader.grade_id] = namespace["score"]
            done["points"][cell.metadata.nbgrader.grade_id] = cell.metadata.nbgrader.points
        if cell.metadata.dsgrade.role == "plot":
            done["figures"] += len(plt.get_fignums())
            plt.close("all")
    return done


@pytest.mark.parametrize("episode_id", EPISODES)
def test_source_notebook_runs_with_full_marks(course, episode_id):
    done = run_in_process(read(notebook_path(course, "source", episode_id)))
    assert done["scores"] == done["points"] and done["scores"]
    assert done["figures"] >= len(PLOTS.get(episode_id, []))


# --- the nbgrader cycle (background) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cycle(course, background) -> dict:
    """The results of tests/notebook_cycle.py: ``steps`` (success, log), ``scores``, ``cell_scores``."""
    results = json.loads(finished(background, "cycle").read_text())
    print("\nnbgrader scores:", {k: f"{s:g}/{m:g}" for k, (s, m) in results["scores"].items()},
          "\nseconds:", {k: round(v, 1) for k, v in results["seconds"].items()})
    return results


def succeeded(cycle: dict, step: str) -> None:
    result = cycle["steps"][step]
    assert result["success"], result.get("error") or result.get("log")


@pytest.mark.parametrize("episode_id", EPISODES)
def test_assignment_is_generated_without_solutions_or_hidden_tests(course, cycle, episode_id):
    succeeded(cycle, f"generate_assignment {episode_id}")
    episode = registry.load_episode(episode_id)
    text = (ROOT / "solutions" / f"{episode.module}.py").read_text()
    lines = text.splitlines()
    stub_lines = {line.strip() for line in make_stub(text, episode_id).splitlines()}
    secret = {lines[i].strip() for begin, end, _ in regions(text) for i in range(begin + 1, end)}
    secret = {line for line in secret - stub_lines if line and not line.startswith("#")}
    assert secret, f"{episode_id}: no solution lines to look for"
    released = read(notebook_path(course, "release", episode_id))
    code = "\n".join(c.source for c in released.cells if c.metadata.dsgrade.role != "plot")
    assert "BEGIN SOLUTION" not in code and "HIDDEN TESTS" not in code and "hidden=True" not in code
    assert not secret & {line.strip() for line in code.splitlines()}
    assert len(cells(released, "tests")) == len([ex for ex in episode.exercises if ex.checks])


@pytest.mark.parametrize("episode_id", EPISODES)
def test_released_notebook_runs_top_to_bottom_with_zero_points(course, cycle, episode_id):
    released = read(notebook_path(course, "release", episode_id))
    done = run_in_process(released)
    assert done["scores"] and not any(done["scores"].values())
    notes = [done["stdout"][i] for i, c in enumerate(released.cells)
             if c.metadata.dsgrade.role == "plot" and c.cell_type == "code"]
    assert all("fill in the exercises above" in note for note in notes)


def no_errors_or_stderr_in_test_cells(nb) -> None:
    for cell in nb.cells:
        outputs = cell.get("outputs", [])
        assert not [o for o in outputs if o.output_type == "error"], cell.source
        if cell.metadata.dsgrade.role == "tests":  # nbgrader scores a test cell with stderr output as 0
            assert not [o for o in outputs if o.output_type == "stream" and o.name == "stderr"], cell.source


@pytest.mark.parametrize("episode_id", AUTOGRADED)
def test_autograde_gives_full_marks_to_the_source_and_zero_to_the_release(course, cycle, episode_id):
    succeeded(cycle, f"autograde {episode_id} full")
    succeeded(cycle, f"autograde {episode_id} zero")
    max_score = registry.load_episode(episode_id).max_score
    assert cycle["scores"][f"{episode_id} full"] == [max_score, max_score]
    assert cycle["scores"][f"{episode_id} zero"] == [0, max_score]
    no_errors_or_stderr_in_test_cells(read(notebook_path(course, "autograded", episode_id, "full")))


def test_partial_credit_is_what_check_returned(cycle):
    succeeded(cycle, f"autograde {MISTAKEN} mistaken")
    exercise, misconception = mistaken_exercise(MISTAKEN)
    impl = types.SimpleNamespace(**{exercise.name: misconception.replacement})
    expected = sum(r.points for r in grade_locally(exercise, impl, LiveReference(), DEFAULT_SEED))
    assert 0 < expected < exercise.max_score
    cell_scores = cycle["cell_scores"][f"{MISTAKEN} mistaken"]
    assert cell_scores[f"{MISTAKEN}-{exercise.name}-checks"] == expected
    # Later exercises that call the mistaken function lose points too (as with dsgrade); the total is the sum.
    score, max_score = cycle["scores"][f"{MISTAKEN} mistaken"]
    assert 0 < score == sum(cell_scores.values()) < max_score


def test_feedback_teaches_but_never_shows_hidden_expected_values(course, cycle):
    for episode, student in SUBMISSIONS:
        succeeded(cycle, f"generate_feedback {episode} {student}")
        assert (course / "feedback" / student / episode / f"{episode}.html").exists()
    page = (course / "feedback" / "mistaken" / MISTAKEN / f"{MISTAKEN}.html").read_text()
    exercise, misconception = mistaken_exercise(MISTAKEN)
    assert html.escape(misconception.hint.split(".")[0]) in page
    assert f"{exercise.id} · hidden checks" in page  # the hidden results are shown …
    assert "hidden=True" not in page and "seed=" not in page  # … not the hidden tests' code (the config)
    assert not [v for v in expected_strings(exercise, hidden=True) if v in page]
    assert [v for v in expected_strings(exercise, hidden=False) if v in page]  # the search does find values


def test_export_writes_the_recorded_scores_to_grades_csv(course, cycle):
    succeeded(cycle, "export")
    with open(course / "grades.csv", newline="") as f:
        rows = {(r["assignment"], r["student_id"]): r for r in csv.DictReader(f)}
    for key, (score, max_score) in cycle["scores"].items():
        row = rows[tuple(key.split())]
        assert float(row["raw_score"]) == score and float(row["max_score"]) == max_score


# --- in a kernel (background) -------------------------------------------------------------------------


@pytest.mark.parametrize("episode_id", IN_KERNEL)
def test_notebook_runs_end_to_end_in_a_kernel(background, episode_id):
    nb = read(finished(background, "execute") / f"{episode_id}.ipynb")
    no_errors_or_stderr_in_test_cells(nb)
    for cell in cells(nb, "tests"):
        result = [o for o in cell.outputs if o.output_type == "execute_result"]
        assert float(result[0].data["text/plain"]) == cell.metadata.nbgrader.points
        assert any("dsgrade-check" in o.get("data", {}).get("text/html", "") for o in cell.outputs)
    for cell in cells(nb, "plot"):
        if cell.cell_type == "code":
            assert any("image/png" in o.get("data", {}) for o in cell.outputs)
