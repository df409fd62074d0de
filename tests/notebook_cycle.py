"""An instructor's nbgrader cycle on a generated course, as the test suite runs it.

    python tests/notebook_cycle.py COURSE_DIR RESULTS_JSON

Runs in a process of its own (``tests/test_notebooks.py`` starts it in the background, so the
kernels it starts overlap with the in-process tests), through nbgrader's Python API with the
course's own ``nbgrader_config.py``, two submissions at a time:

1. ``generate_assignment`` for every episode;
2. submissions: the source notebooks (student ``full``) and the released ones (``zero``) of
   :data:`AUTOGRADED`, and the source of :data:`MISTAKEN` with one known misconception (``mistaken``);
3. ``autograde`` and ``generate_feedback`` for each submission, then ``export`` (grades.csv);
4. writes RESULTS_JSON: each step's success and log, the scores the gradebook recorded, and how
   long each phase took.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from pathlib import Path

import nbformat

from autograder import registry
from autograder.notebooks import CONFIG_FILE

AUTOGRADED = [e for e in ("ep05", "ep16", "capstone") if e in registry.episode_ids()]  # as they exist
MISTAKEN = "ep05"
SUBMISSIONS = [(ep, "full") for ep in AUTOGRADED] + [(ep, "zero") for ep in AUTOGRADED] + [(MISTAKEN, "mistaken")]


def notebook_path(course: Path, step: str, episode: str, student: str = "") -> Path:
    """Where nbgrader keeps an episode's notebook at a step (source, release, submitted, autograded)."""
    return course / step / student / episode / f"{episode}.ipynb"


def mistaken_exercise(episode_id: str = MISTAKEN):
    """The first function exercise of an episode with hidden checks and a misconception, and that misconception."""
    for ex in registry.load_episode(episode_id).exercises:
        if ex.method is None and ex.misconceptions and any(c.hidden for c in ex.checks):
            return ex, ex.misconceptions[0]
    raise LookupError(f"{episode_id} has no function exercise with hidden checks and misconceptions")


def inject_mistake(nb, exercise, misconception) -> None:
    """A student's mistake: the exercise's solution cell ends by rebinding the name to a misconception."""
    grade_id = f"{exercise.episode.id}-{exercise.name}"
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
    index = exercise.episode.exercises.index(exercise)
    cell.source += (f"\n\n\nfrom autograder.registry import load_episode\n"
                    f"{exercise.name} = next(m.replacement for m in "
                    f'load_episode("{exercise.episode.id}").exercises[{index}].misconceptions '
                    f'if m.name == "{misconception.name}")\n')


def submission(course: Path, episode: str, student: str):
    """The notebook a student hands in (see the module docstring)."""
    nb = nbformat.read(str(notebook_path(course, "release" if student == "zero" else "source", episode)), 4)
    if student == "mistaken":
        inject_mistake(nb, *mistaken_exercise(episode))
    return nb


def nbgrader_api(course: Path):
    """nbgrader's API on the course, configured by the course's own nbgrader_config.py."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader(CONFIG_FILE, path=str(course)).load_config()
    config.CourseDirectory.root = str(course)
    config.ExportPlugin.to = str(course / "grades.csv")
    return NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)


def grade(course: Path, episode: str, student: str) -> dict:
    """Step 3 for one submission."""
    api = nbgrader_api(course)
    return {f"autograde {episode} {student}": api.autograde(episode, student),
            f"generate_feedback {episode} {student}": api.generate_feedback(episode, student)}


def run(course: Path) -> dict:
    """Steps 1-3; returns what step 4 writes."""
    from nbgrader.api import Gradebook
    from nbgrader.apps.exportapp import ExportApp
    from nbgrader.utils import capture_log

    api = nbgrader_api(course)
    steps, seconds, start = {}, {}, time.perf_counter()
    for episode in registry.episode_ids():
        steps[f"generate_assignment {episode}"] = api.generate_assignment(episode)
    for episode, student in SUBMISSIONS:
        path = notebook_path(course, "submitted", episode, student)
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(submission(course, episode, student), str(path))
    seconds["generate_assignment"], start = time.perf_counter() - start, time.perf_counter()
    db = f"sqlite:///{course / 'gradebook.db'}"
    with Gradebook(db) as gb:  # here, not in the workers: two creating one student at once would clash
        for student in sorted({s for _, s in SUBMISSIONS}):
            gb.update_or_create_student(student)
    # Each submission takes a kernel that spends seconds importing torch: two at a time, in processes
    # (nbgrader changes os.environ while it autogrades, so threads would trip over each other).
    with multiprocessing.get_context("fork").Pool(2) as pool:
        for done in pool.starmap(grade, [(course, e, s) for e, s in SUBMISSIONS], chunksize=1):
            steps.update(done)
    seconds["autograde and feedback"], start = time.perf_counter() - start, time.perf_counter()
    steps["export"] = capture_log(ExportApp(coursedir=api.coursedir, parent=api))
    seconds["export"] = time.perf_counter() - start
    scores, cells = {}, {}
    with Gradebook(db) as gb:
        for episode, student in SUBMISSIONS:
            sub = gb.find_submission(episode, student)
            scores[f"{episode} {student}"] = [sub.score, sub.max_score]
            cells[f"{episode} {student}"] = {g.name: g.score for nb in sub.notebooks for g in nb.grades}
    return {"steps": steps, "scores": scores, "cell_scores": cells, "seconds": seconds}


if __name__ == "__main__":
    course_dir, results = Path(sys.argv[1]), Path(sys.argv[2])
    results.write_text(json.dumps(run(course_dir), indent=1))
