"""Grading one check: the target's answer against the reference, and the hint.

This is the single place that decides whether a check passed and what the
student is told; the pytest plugin and the in-notebook API both call
:func:`evaluate`.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass
from pathlib import Path

from .compare import agrees, diagnose
from .reference import is_crashed
from .relations import relations
from .untrusted import clean_lines

@dataclass
class CheckRecord:
    """The outcome of one check on one case (one row of the JSON report's ``checks``)."""

    id: str
    exercise: str
    episode: str
    description: str
    hidden: bool
    status: str  # passed, failed, not_implemented, error, timeout
    points: float
    max_points: float
    message: str = ""
    hint: str = ""
    blame: str = ""  # the exercise that breaks this check, when it is another one (see autograder.dependencies)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def record_for(check, c, status: str, message: str = "", hint: str = "", points: float = 0.0) -> CheckRecord:
    """A :class:`CheckRecord` for ``check`` on case ``c``; its message may quote student text, so it is cleaned."""
    return CheckRecord(check.item_id(c), check.exercise.id, check.exercise.episode.id, check.description,
                       check.hidden, status, points, check.points, clean_lines(message), hint)


def evaluate(check, c, seed: int, answer: dict, reference) -> CheckRecord:
    """Grades the target's answer to one check.

    Args:
        check (registry.Check): The check.
        c (registry.Case): The case it ran on.
        seed (int): The inputs' seed.
        answer (dict): ``{"status": "ok", "result": plain}`` or
            ``{"status": "not_implemented" | "error" | "timeout", "message": str}``.
        reference: A :mod:`autograder.reference` object.

    Returns:
        CheckRecord: Full points when the result agrees with the reference.
    """
    if answer["status"] != "ok":
        return record_for(check, c, answer["status"], answer.get("message", ""))
    got = answer["result"]
    expected = reference.expected(check, c, seed)
    problems = diagnose(expected, got, check.tolerances, hidden=check.hidden)
    if not problems:
        return record_for(check, c, "passed", points=check.points)
    problems += [f"looks like: {sentence}"
                 for sentence in relations(expected, got, check.tolerances, hidden=check.hidden)]
    stage = None
    if check.stages:
        stage, line = _first_differing_stage(expected, got, check.tolerances)
        problems.insert(0, line)
    record = record_for(check, c, "failed", "\n".join(problems), _hint(check, c, seed, got, reference))
    part = re.match(r"(ep\d\d|capstone)\.\w+", stage or "")  # "ep19.MoE (ffn)" is ep19.MoE's output
    if part and part.group(0) != check.exercise.id:
        record.blame = part.group(0)  # the report's "Next, fix …" goes to the part that breaks the pipeline
    return record


def _first_differing_stage(expected: dict, got, tolerances) -> tuple[str | None, str]:
    """The first stage (in pipeline order) whose output differs from the reference's, and a line naming it."""
    stages = list(expected)
    for i, stage in enumerate(stages):
        if not isinstance(got, dict) or stage not in got or diagnose(expected[stage], got[stage], tolerances):
            before = "the stages before it match" if i else "it is the first stage"
            return stage, f"first differing stage: {stage} ({before})"
    return None, "every stage matches on its own; the way they are put together differs"


def _hint(check, c, seed, got, reference) -> str:
    """The hints of every misconception whose output the student's matches."""
    hints = []
    for m in check.exercise.misconceptions:
        out = reference.misconception(m, check, c, seed)
        if not is_crashed(out) and agrees(out, got, check.tolerances):
            hints.append(m.hint)
    return "\n".join(hints)


def _describe_exception(e: BaseException, source_dir: Path | None) -> str:
    """``Type: message`` plus the innermost line of the student's code that raised it."""
    text = f"{type(e).__name__}: {e}".strip().rstrip(":")
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if source_dir is None or Path(f.filename).resolve().parent == source_dir]
    if frames:
        f = frames[-1]
        text += f" (at {Path(f.filename).name}:{f.lineno} in {f.name}"
        text += f": {f.line.strip()})" if f.line else ")"
    if isinstance(e, SyntaxError) and e.filename:
        text = f"SyntaxError: {e.msg} (at {Path(e.filename).name}:{e.lineno}: {(e.text or '').strip()})"
    return text


def exception_answer(e: BaseException, exercise_id: str | None, source_dir: Path | None = None) -> dict:
    """The answer for a check whose code raised ``e`` (student code may raise anything).

    Args:
        e: The exception.
        exercise_id: The exercise being checked (to tell its own stub from another's).
        source_dir: Folder of the student's files, to point at the line that raised.
    """
    if isinstance(e, NotImplementedError):
        needed = str(e).strip()
        if exercise_id and needed and needed != exercise_id:
            return {"status": "not_implemented",
                    "message": f"uses {needed}, which is not implemented yet"}
        return {"status": "not_implemented",
                "message": "not implemented yet (the stub still raises NotImplementedError)"}
    if isinstance(e, SystemExit):
        return {"status": "error", "message": f"your code called sys.exit({e.code!r})"}
    if isinstance(e, KeyboardInterrupt):
        return {"status": "error", "message": "your code raised KeyboardInterrupt"}
    return {"status": "error", "message": _describe_exception(e, source_dir)}


def grade_locally(exercise, impl, reference, session_seed: int, source_dir: Path | None = None) -> list[CheckRecord]:
    """Runs every check of ``exercise`` on ``impl`` in *this* process and grades it.

    For trusted or already-sandboxed code only: the test suite (misconception
    variants) and a student's own notebook kernel. ``dsgrade`` uses the worker.

    Args:
        exercise (registry.Exercise): The exercise.
        impl: Module-like namespace holding the implementation.
        reference: A :mod:`autograder.reference` object.
        session_seed (int): The session seed.
        source_dir: Folder of the implementation's files (for error locations).

    Returns:
        list[CheckRecord]: One record per check and case.
    """
    from .probing import run_probe
    from .registry import item_seed

    records = []
    for check in exercise.checks:
        for c in check.cases:
            seed = item_seed(session_seed, check.item_id(c))
            try:
                answer = {"status": "ok", "result": run_probe(check, c, impl, seed, reference.given(check, c, seed))}
            except Exception as e:  # the implementation's error is the check's outcome
                answer = exception_answer(e, exercise.id, source_dir)
            records.append(evaluate(check, c, seed, answer, reference))
    return records
