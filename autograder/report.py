"""Scores and reports: the JSON contract (``dsgrade/1``) and the terminal table.

:func:`build_report` turns the plugin's check records into a :class:`Report`
with exercise and episode totals; statuses follow DESIGN.md's grading rules.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from rich.padding import Padding
from rich.text import Text

from . import registry
from .grading import CheckRecord, record_for
from .submission import Submission

SCHEMA = "dsgrade/1"
_STYLE = {"passed": "green", "partial": "yellow", "failed": "red", "not_implemented": "blue",
          "error": "bold red", "timeout": "magenta", "skipped": "dim"}
_SYMBOL = {"passed": "✓", "partial": "◐", "failed": "✗", "not_implemented": "○", "error": "!", "timeout": "⏱",
           "skipped": "–"}


def overall_status(statuses: list[str], score: float, max_score: float) -> str:
    """Status of an exercise (from its checks) or an episode (from its exercises); checks that did not
    run (``-x``) do not count, and only what ran nothing is ``skipped``."""
    if statuses and all(s == "skipped" for s in statuses):
        return "skipped"
    statuses = [s for s in statuses if s != "skipped"]
    if statuses and all(s == "passed" for s in statuses):
        return "passed"
    if score > 0:
        return "partial"
    for status in ("not_implemented", "timeout", "error"):
        if statuses and all(s == status for s in statuses):
            return status
    for status in ("timeout", "error"):
        if status in statuses:
            return status
    return "not_implemented" if "not_implemented" in statuses else "failed"


@dataclass
class ExerciseResult:
    id: str
    episode: str
    checks: list[CheckRecord]

    @property
    def score(self) -> float:
        return sum(c.points for c in self.checks)

    @property
    def max_score(self) -> float:
        return sum(c.max_points for c in self.checks)

    @property
    def status(self) -> str:
        return overall_status([c.status for c in self.checks], self.score, self.max_score)


@dataclass
class EpisodeResult:
    id: str
    title: str
    video: str
    module: str
    exercises: list[ExerciseResult] = field(default_factory=list)

    @property
    def score(self) -> float:
        return sum(e.score for e in self.exercises)

    @property
    def max_score(self) -> float:
        return sum(e.max_score for e in self.exercises)

    @property
    def status(self) -> str:
        return overall_status([e.status for e in self.exercises], self.score, self.max_score)


@dataclass
class Report:
    target: str
    target_dir: Path
    seed: int
    episodes: list[EpisodeResult]
    internal_errors: list[str] = field(default_factory=list)
    sandbox: dict = field(default_factory=dict)  # what protected the run (Grader.sandbox_summary)
    submission: Submission | None = None  # the copy that was graded: refused files, lines of stubs
    instructor_points: dict[str, float] = field(default_factory=dict)  # a release: exercise → hidden points

    @property
    def exercises(self) -> list[ExerciseResult]:
        return [ex for ep in self.episodes for ex in ep.exercises]

    @property
    def score(self) -> float:
        return sum(e.score for e in self.episodes)

    @property
    def max_score(self) -> float:
        return sum(e.max_score for e in self.episodes)

    def to_json(self) -> dict:
        """The ``dsgrade/1`` report (DESIGN.md); fields beyond the contract are additions only."""
        return {
            "schema": SCHEMA,
            "target": self.target,
            "target_path": str(self.target_dir),
            "seed": self.seed,
            "sandbox": self.sandbox,
            "refused_files": dict(self.submission.refused) if self.submission else {},
            **({"instructor_graded": {"points": sum(self.instructor_points.values()),
                                      "exercises": self.instructor_points}} if self.instructor_points else {}),
            "score": self.score,
            "max_score": self.max_score,
            "episodes": [{"id": ep.id, "title": ep.title, "video": ep.video, "score": ep.score,
                          "max_score": ep.max_score, "status": ep.status} for ep in self.episodes],
            "exercises": [{"id": ex.id, "episode": ex.episode, "score": ex.score, "max_score": ex.max_score,
                           "status": ex.status, "checks": [_check_json(c) for c in ex.checks]}
                          for ex in self.exercises],
        }

    def to_json_text(self) -> str:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"


def _check_json(c: CheckRecord) -> dict:
    return {"id": c.id, "hidden": c.hidden, "passed": c.passed, "points": c.points,
            "max_points": c.max_points, "status": c.status, "description": c.description,
            "message": c.message, "hint": c.hint, "blame": c.blame}


def build_report(grader) -> Report:
    """Builds the report from a :class:`~autograder.plugin.Grader`'s records.

    Checks that were selected but never ran (``-x`` stopped the session) count
    as failed with 0 points, so the report always covers the whole selection.
    """
    episodes: dict[str, EpisodeResult] = {}
    exercises: dict[str, ExerciseResult] = {}
    for check, c in grader.selected:
        ex, ep = check.exercise, check.exercise.episode
        if ep.id not in episodes:
            episodes[ep.id] = EpisodeResult(ep.id, ep.title, ep.video, ep.module)
        if ex.id not in exercises:
            exercises[ex.id] = ExerciseResult(ex.id, ep.id, [])
            episodes[ep.id].exercises.append(exercises[ex.id])
        record = grader.records.get(check.item_id(c)) or record_for(
            check, c, "skipped", "not run: the session stopped before this check (-x or an interruption)")
        exercises[ex.id].checks.append(record)
    hidden: dict[str, float] = {}
    for check, _c in grader.instructor_checks:
        hidden[check.exercise.id] = hidden.get(check.exercise.id, 0.0) + check.points
    return Report(grader.target, grader.target_dir, grader.seed, list(episodes.values()),
                  list(grader.internal_errors), grader.sandbox_summary(), grader.submission, hidden)


# --- terminal ------------------------------------------------------------------------------


def stub_location(report: Report, module: str, exercise_id: str) -> str:
    """``exercises/ep05_self_attention.py:42``: where the exercise's stub (or definition) is.

    Read from the graded copy's bytes in memory: the report never opens a student's file.
    """
    path = Path(report.target_dir) / f"{module}.py"
    lines = report.submission.lines(module) if report.submission else []
    name = exercise_id.split(".", 1)[1]
    patterns = [f'NotImplementedError("{exercise_id}")', rf"^(def|class)\s+{re.escape(name)}\b"]
    for pattern in patterns:
        for i, line in enumerate(lines, 1):
            if (pattern in line) if pattern.startswith("Not") else re.match(pattern, line):
                return f"{_display_path(path)}:{i}"
    return _display_path(path)


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it; never touches the file (it may be a loop)."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(os.getcwd()))
    except ValueError:
        return str(path)


def render(report: Report, console, verbose: bool = False, max_checks: int = 3) -> None:
    """Prints the score table, then what went wrong per check, then a summary line.

    Args:
        report: The report.
        console: A ``rich.console.Console`` (it decides about colour: only on a TTY).
        verbose: Also list passing checks, and every failing check.
        max_checks: Failing checks shown per exercise when not verbose.
    """
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"dsgrade — target {report.target} ({_display_path(report.target_dir)}), seed {report.seed}",
                  title_justify="left", show_edge=False, pad_edge=False)
    hidden = {}
    for ex_id, points in report.instructor_points.items():
        hidden[ex_id.split(".")[0]] = hidden.get(ex_id.split(".")[0], 0.0) + points
    table.add_column("episode")
    table.add_column("title", overflow="fold")
    table.add_column("public score" if hidden else "score", justify="right")
    if hidden:
        table.add_column("hidden (instructor)", justify="right")
    table.add_column("status")
    for ep in report.episodes:
        style = _STYLE[ep.status]
        extra = [f"{hidden.get(ep.id, 0):g} pts"] if hidden else []
        table.add_row(ep.id, ep.title, f"{ep.score:g}/{ep.max_score:g}", *extra,
                      f"[{style}]{_SYMBOL[ep.status]} {ep.status.replace('_', ' ')}[/]")
    console.print(table)
    note = _sandbox_note(report)
    if note:
        console.print(Text(note, style="yellow"))

    for ep in report.episodes:
        cause = _single_cause(ep)
        if cause and not verbose:  # e.g. the module does not import: say it once
            console.print()
            console.print(f"[{_STYLE[ep.status]}]{_SYMBOL[ep.status]} {ep.id}[/] 0/{ep.max_score:g} "
                          f"{ep.status}  [dim]{escape(_display_path(Path(report.target_dir) / (ep.module + '.py')))}[/]")
            console.print(_student_text(cause, 4))
            continue
        for ex in ep.exercises:
            if ex.status == "passed" and not verbose:
                continue
            _render_exercise(console, escape, report, ep, ex, verbose, max_checks)

    for err in report.internal_errors:
        console.print(Text.assemble(("grader error: ", "bold red"), err))
    console.print()
    console.print(summary_line(report))
    nxt = next_step(report)
    if nxt:
        console.print(nxt)


def _student_text(text: str, indent: int) -> Padding:
    """A message, indented, printed as plain text: rich markup or emoji codes in it stay literal."""
    return Padding(Text(text), (0, 0, 0, indent), expand=False)


def _sandbox_note(report: Report) -> str:
    """One line when student code was not fully sandboxed, else ''."""
    box = report.sandbox or {}
    if not box or not box.get("missing") and box.get("mode") != "off":
        return ""
    if box.get("mode") == "off":
        return "sandbox: off (--sandbox off) — the code ran with your own permissions"
    missing = "; ".join(f"{layer}: {why}" for layer, why in box["missing"].items())
    applied = ", ".join(box.get("applied") or []) or "only resource limits"
    return (f"sandbox: partial ({applied}) — {missing}. Fine for your own code; to grade other people's "
            f"code use a Linux machine with the full sandbox (--sandbox strict)")


def _single_cause(ep: EpisodeResult) -> str:
    """The one error message every check of an episode got (an import failure), else ''."""
    checks = [c for ex in ep.exercises for c in ex.checks]
    messages = {c.message for c in checks}
    if ep.status in ("error", "timeout") and len(messages) == 1 and not any(c.passed for c in checks):
        return messages.pop()
    return ""


def _render_exercise(console, escape, report, ep, ex, verbose, max_checks) -> None:
    style = _STYLE[ex.status]
    where = stub_location(report, ep.module, ex.id)
    head = f"[{style}]{_SYMBOL[ex.status]} {ex.id}[/] {ex.score:g}/{ex.max_score:g} {ex.status.replace('_', ' ')}"
    if ex.id in report.instructor_points:
        head += f" [dim](+{report.instructor_points[ex.id]:g} hidden points, graded by your instructor)[/]"
    failing = [c for c in ex.checks if not c.passed]
    messages = {c.message for c in failing}
    if ex.status == "not_implemented" and len(messages) == 1 and not verbose:  # one line: nothing to explain
        cause = failing[0].message
        note = "" if cause.startswith("not implemented yet") else f" — {cause}"
        console.print(Text.from_markup(f"{head}  [dim]{escape(where)}[/]") + Text(note))
        return
    console.print()
    console.print(f"{head}  [dim]{escape(where)}[/]")
    if ex.status in ("error", "timeout") and len(messages) == 1 and not verbose:
        console.print(_student_text(failing[0].message, 4))  # one cause for all its checks
        return
    shown = ex.checks if verbose else failing[:max_checks]
    for c in shown:
        tag = "hidden" if c.hidden else "public"
        cstyle = "green" if c.passed else _STYLE.get(c.status, "red")
        console.print(f"  [{cstyle}]{_SYMBOL.get(c.status, '✗')}[/] {escape(c.id.split('::', 1)[1])} "
                      f"[dim]({tag}) {escape(c.description)}[/]")
        for line in c.message.splitlines():
            console.print(_student_text(line, 6))
    if len(failing) > len(shown) and not verbose:
        more = len(failing) - len(shown)
        console.print(f"  [dim]… {more} more failing check{'s' if more > 1 else ''} (dsgrade {ex.id} -v)[/]")
    hints = list(dict.fromkeys(h for c in failing for h in c.hint.splitlines() if h))  # each once
    for hint in hints:
        console.print(Padding(Text.assemble(("hint: ", "bold yellow"), (hint, "yellow")), (0, 0, 0, 4), expand=False))


def summary_line(report: Report) -> str:
    n = len(report.exercises)
    passed = sum(1 for ex in report.exercises if ex.status == "passed")
    pct = 100 * report.score / report.max_score if report.max_score else 0.0
    if report.instructor_points:  # a student release: the hidden checks are not run here
        hidden = sum(report.instructor_points.values())
        return (f"[bold]public checks: {report.score:g}/{report.max_score:g} ({pct:.0f}%)[/]; hidden checks: "
                f"{hidden:g} points graded by your instructor — {passed} of {n} exercises pass their public checks")
    episodes = len(report.episodes)
    return (f"[bold]score {report.score:g}/{report.max_score:g} ({pct:.0f}%)[/] — "
            f"{passed} of {n} exercise{'s' if n != 1 else ''} passed, {episodes} episode{'s' if episodes != 1 else ''} "
            "graded")


def next_step(report: Report) -> str:
    """Where to go next: the first exercise that does not pass yet, or what breaks it."""
    for ep in report.episodes:
        for ex in ep.exercises:
            if ex.status != "passed":
                blamed = [c.blame for c in ex.checks if not c.passed and c.blame and c.blame != ex.id]
                root = blamed[0] if blamed else ex.id
                module = next((e.module for e in report.episodes if e.id == root.split(".")[0]),
                              registry.load_episode(root.split(".")[0]).module)
                where = stub_location(report, module, root)
                verb = "Start with" if ex.status == "not_implemented" else "Next, fix"
                because = f" (your {ex.id} depends on it)" if root != ex.id else ""
                target = "" if report.target == "exercises" else f" --target {report.target}"
                return f"{verb} {root} in {where}{because}  (then run: dsgrade {root.split('.')[0]}{target})"
    return _next_episode(report)


def _next_episode(report: Report) -> str:
    """After an episode passes in full: the one that follows it in the course, if it was not graded too."""
    ids = registry.episode_ids()
    last = report.episodes[-1].id if report.episodes else None
    if last is None or last == ids[-1]:
        return ""
    following = registry.load_episode(ids[ids.index(last) + 1])
    target = "" if report.target == "exercises" else f" --target {report.target}"
    return (f"{last} passes every check. Next episode: {following.id} {following.title} "
            f"(dsgrade {following.id}{target}){' — ' + following.video if following.video else ''}")
