"""``dsgrade``: a thin command line over the pytest plugin and the generator.

    dsgrade [grade] [ep05 ep13.MultiHeadLatentAttention …] [--target T] [--json F] [--seed N] [-v] [-x]
    dsgrade list [--target T]
    dsgrade sync [--force] [--check]
    dsgrade fixtures FILE [--seed N]
    dsgrade notebooks COURSE_DIR [--seed N]

Exit status: 0 every check passed, 1 some failed (the report is complete), 2 the
grader could not run (bad arguments, target not found, internal error).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from . import registry, sandbox, targets

COMMANDS = ("grade", "list", "sync", "fixtures", "notebooks")
INI = Path(__file__).parent / "pytest.ini"


def run() -> None:
    """The ``dsgrade`` console script: :func:`main`, then exit without tearing torch down.

    Unloading torch at interpreter exit takes about a second; every file is
    written and closed by now, so flush the terminal and leave.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    # Only the plugins dsgrade names: faster, and a project's own pytest plugins cannot interfere.
    os.environ.setdefault("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "grade"
    parser = _parser(command)
    args = parser.parse_args(argv)
    try:
        if command == "grade":
            return grade(selectors=args.selectors, target=args.target, seed=args.seed, json_path=args.json,
                         verbose=args.verbose, exitfirst=args.exitfirst, timeout=args.timeout,
                         fixtures=args.fixtures, junitxml=args.junitxml, sandbox_mode=args.sandbox,
                         memory=args.memory)
        if command == "list":
            return list_exercises(target=args.target)
        if command == "sync":
            return sync(force=args.force, check=args.check)
        if command == "notebooks":
            return notebooks(course_dir=Path(args.course_dir), seed=args.seed)
        return record(path=Path(args.file), seed=args.seed)
    except targets.TargetError as e:
        print(f"dsgrade: {e}", file=sys.stderr)
        return 2


def _parser(command: str) -> argparse.ArgumentParser:
    from .plugin import DEFAULT_SEED, DEFAULT_TIMEOUT

    p = argparse.ArgumentParser(prog=f"dsgrade {command}" if command != "grade" else "dsgrade",
                                description=_DESCRIPTIONS[command])
    if command in ("grade", "list"):
        p.add_argument("--target", default="exercises",
                       help="exercises (default), solutions, or a folder of epNN_*.py files")
    if command == "grade":
        p.add_argument("selectors", nargs="*", metavar="EPISODE_OR_EXERCISE",
                       help="e.g. ep05 or ep05.scaled_dot_product_attention (default: everything)")
        p.add_argument("--json", metavar="FILE", help="write the dsgrade/1 JSON report to FILE")
        p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the inputs (default %(default)s)")
        p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                       help="seconds each check may take (default %(default)s)")
        p.add_argument("--fixtures", metavar="FILE", help="expected outputs recorded by 'dsgrade fixtures'")
        p.add_argument("--junitxml", metavar="FILE", help="also write a JUnit XML report")
        p.add_argument("--sandbox", choices=sandbox.MODES, default="auto",
                       help="auto (default): run student code in the OS sandbox where this machine has one; "
                            "strict: refuse to grade without it; off: no sandbox")
        p.add_argument("--memory", type=parse_size, default=sandbox.DEFAULT_MEMORY, metavar="SIZE",
                       help="memory student code may allocate per episode, e.g. 512M or 4G (default 2G)")
        p.add_argument("-v", "--verbose", action="store_true", help="show passing checks and every failure")
        p.add_argument("-x", "--exitfirst", action="store_true", help="stop at the first failing check")
    if command == "sync":
        p.add_argument("--force", action="store_true", help="overwrite exercise files you have edited")
        p.add_argument("--check", action="store_true", help="change nothing; exit 1 if exercises/ is stale")
    if command == "fixtures":
        p.add_argument("file", help="where to write the recorded reference outputs")
        p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    if command == "notebooks":
        p.add_argument("course_dir", metavar="COURSE_DIR", help="the nbgrader course directory to write")
        p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                       help="seed of the hidden checks' inputs (default %(default)s)")
    return p


_DESCRIPTIONS = {
    "grade": "Grade your exercises (or another target) against the reference.",
    "list": "List episodes and exercises with their points and your last status.",
    "sync": "Maintainers: regenerate exercises/ from solutions/.",
    "fixtures": "Maintainers: record the reference outputs for a release without solutions/.",
    "notebooks": "Instructors: write an nbgrader course (one notebook per episode) from solutions/.",
}


def parse_size(text: str) -> int:
    """Bytes from ``2G``, ``512M``, ``1.5GiB`` or a plain number of bytes (for ``--memory``).

    Example:
        >>> parse_size("2G"), parse_size("512MiB"), parse_size("1000")
        (2147483648, 536870912, 1000)
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 512M or 4G")
    return int(float(m.group(1)) * 1024 ** "bkmgt".index(m.group(2) or "b"))


def _console():
    """A terminal's own width; 160 columns in logs and pipes (instead of rich's 80), unless $COLUMNS says."""
    from rich.console import Console

    width = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
    return Console(highlight=False, width=width)


def check_selectors(selectors: list[str]) -> str | None:
    """An error message if a selector names no episode or exercise, else None."""
    known = registry.episode_ids()
    for sel in selectors:
        ep_id, _, rest = sel.partition(".")
        if ep_id not in known:
            close = [k for k in known if k.lstrip("ep0") == ep_id.lstrip("ep0")]
            return f"no episode {ep_id!r}" + (f"; did you mean {close[0]}?" if close else f" (episodes: {', '.join(known)})")
        if rest:
            names = [ex.name for ex in registry.load_episode(ep_id).exercises]
            if rest.split("::")[0] not in names:
                return f"no exercise {sel!r}; {ep_id} has {', '.join(names)}"
    return None


class _ConfigCatcher:
    """Keeps the pytest config of the run so the CLI can read the grader's records."""

    config = None

    def pytest_configure(self, config):
        self.config = config


def grade(*, selectors: list[str], target: str = "exercises", seed: int = 1234, json_path: str | None = None,
          verbose: bool = False, exitfirst: bool = False, timeout: float = 5.0, fixtures: str | None = None,
          junitxml: str | None = None, sandbox_mode: str = "auto", memory: int = sandbox.DEFAULT_MEMORY,
          console=None) -> int:
    """Grades a target and prints the report; returns the exit status."""
    import pytest

    from .plugin import grader_of
    from .report import build_report, render

    console = console or _console()
    targets.resolve(target)
    problem = check_selectors(selectors)
    missing = sandbox.missing_layers(sandbox_mode)
    if sandbox_mode == "strict" and missing:
        problem = sandbox.refusal(missing)
    if problem:
        print(f"dsgrade: {problem}", file=sys.stderr)
        return 2
    args = [str(registry.CHECKS_DIR), "-c", str(INI), "-p", "autograder.plugin", "-p", "no:terminal",
            "-p", "no:cacheprovider", "--dsgrade-target", target, "--dsgrade-seed", str(seed),
            "--dsgrade-timeout", str(timeout), "--dsgrade-sandbox", sandbox_mode, "--dsgrade-memory", str(memory)]
    for sel in selectors:
        args += ["--dsgrade-select", sel]
    if fixtures:
        args += ["--dsgrade-fixtures", fixtures]
    if json_path:
        args += ["--dsgrade-json", json_path]
    if junitxml:
        args += ["--junitxml", junitxml]
    if exitfirst:
        args.append("-x")
    catcher = _ConfigCatcher()
    code = pytest.main(args, plugins=[catcher])
    if catcher.config is None or code not in (0, 1):
        print(f"dsgrade: the grader could not run (pytest exit status {int(code)})", file=sys.stderr)
        return 2
    report = build_report(grader_of(catcher.config))
    render(report, console, verbose=verbose)
    _save_last(report)
    if report.internal_errors:
        return 2
    return 0 if all(ex.status == "passed" for ex in report.exercises) else 1


def _state_file(target_dir: Path) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dsgrade"
    key = hashlib.sha1(str(Path(target_dir).resolve()).encode()).hexdigest()[:16]
    return cache / f"last-{key}.json"


def _save_last(report) -> None:
    """Remembers each exercise's last status (for ``dsgrade list``); a run of ep05 updates ep05 only."""
    path = _state_file(report.target_dir)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        state = {}
    for ex in report.exercises:
        state[ex.id] = {"status": ex.status, "score": ex.score, "max_score": ex.max_score}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state, indent=1))
    except OSError:
        pass  # a read-only home must not stop grading


def list_exercises(*, target: str = "exercises", console=None) -> int:
    """Prints episodes and exercises with points and the last status."""
    from rich.table import Table

    console = console or _console()
    target_dir = targets.resolve(target)
    try:
        state = json.loads(_state_file(target_dir).read_text())
    except (OSError, ValueError):
        state = {}
    table = Table(show_edge=False, pad_edge=False)
    for col in ("exercise", "checks", "points", "last status"):
        table.add_column(col, justify="right" if col in ("checks", "points") else "left")
    total = 0.0
    for ep in registry.all_episodes():
        table.add_row(f"[bold]{ep.id}  {ep.title}[/]", "", f"[bold]{ep.max_score:g}[/]", f"[dim]{ep.video}[/]")
        for ex in ep.exercises:
            last = state.get(ex.id)
            status = f"{last['status'].replace('_', ' ')} ({last['score']:g})" if last else "[dim]not graded yet[/]"
            n = sum(len(c.cases) for c in ex.checks)
            table.add_row(f"  {ex.id}", str(n), f"{ex.max_score:g}", status)
        total += ep.max_score
    console.print(table)
    console.print(f"\n{total:g} points in all. Grade with: dsgrade [EPISODE_OR_EXERCISE …]")
    return 0


def sync(*, force: bool = False, check: bool = False) -> int:
    """Regenerates exercises/ from solutions/ (see :mod:`autograder.authoring`)."""
    from .authoring import out_of_sync
    from .authoring import sync as do_sync

    if check:
        stale = out_of_sync(targets.SOLUTIONS_DIR, targets.EXERCISES_DIR)
        for name in stale:
            print(f"stale: exercises/{name}")
        return 1 if stale else 0
    result = do_sync(targets.SOLUTIONS_DIR, targets.EXERCISES_DIR, force=force)
    for name in result.written:
        print(f"wrote    exercises/{name}")
    for name in result.removed:
        print(f"removed  exercises/{name}")
    for name in result.kept:
        print(f"kept     exercises/{name} (edited since it was generated; --force overwrites it)")
    print(f"{len(result.written)} written, {len(result.unchanged)} unchanged, {len(result.kept)} kept")
    return 1 if result.kept else 0


def record(*, path: Path, seed: int = 1234) -> int:
    """Records the reference outputs of every check for a release without solutions/."""
    from .reference import record_fixtures

    n = record_fixtures(registry.all_episodes(), seed, path)
    print(f"recorded {n} checks (seed {seed}) in {path}")
    return 0


def notebooks(*, course_dir: Path, seed: int = 1234) -> int:
    """Writes the nbgrader course (see :mod:`autograder.notebooks`)."""
    from .notebooks import CONFIG_FILE, build_course

    written = build_course(course_dir, seed)
    for path in written:
        print(f"wrote    {path}")
    if course_dir / CONFIG_FILE not in written:
        print(f"kept     {course_dir / CONFIG_FILE} (yours: it is written only when missing)")
    print(f"{len(written)} written; next: cd {course_dir} && nbgrader generate_assignment EPISODE")
    return 0
