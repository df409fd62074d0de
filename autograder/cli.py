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

INI = Path(__file__).parent / "pytest.ini"

# Every command, with the line `dsgrade --help` shows for it (order: students, instructors, maintainers).
COMMANDS = {
    "grade": "grade your exercises (or another target) against the reference (the default command)",
    "list": "list episodes and exercises with their points and your last status",
    "watch": "re-grade on every save of an episode file (and the episodes that import it)",
    "reset": "put one exercise back as it was handed out (your version is kept in a backup)",
    "notebooks": "instructors: write an nbgrader course (one notebook per episode) from solutions/",
    "release": "instructors: write the project students get: exercises, grader, public fixtures, no answers",
    "batch": "instructors: grade a class in parallel: a JSON report per student, grades.csv, a class report",
    "merge": "instructors: combine the outputs of `dsgrade batch --shard I/N` runs",
    "gradescope": "instructors: write a Gradescope autograder zip",
    "sync": "maintainers: regenerate exercises/ from solutions/",
    "fixtures": "maintainers: record the reference outputs (for grading where solutions/ is not installed)",
}
# What an instructor should know of --seed, per command (students see a release's seed; not a grading one).
SEED_ADVICE = {
    "release": "; students see it: grade the class with another one",
    "batch": "; pick one students do not know, so no output can be computed ahead for it",
    "gradescope": "; pick one students do not know, so no output can be computed ahead for it",
}
NEEDS_SOLUTIONS = ("notebooks", "release", "batch", "gradescope", "sync", "fixtures")


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
    args = _parser(command).parse_intermixed_args(argv)  # EPISODE … may come after the options
    try:
        if command in NEEDS_SOLUTIONS and not targets.SOLUTIONS_DIR.is_dir():
            raise targets.TargetError(f"'dsgrade {command}' needs the course's solutions/, which a student "
                                      "release does not have")
        return _RUN[command](args)
    except targets.TargetError as e:
        print(f"dsgrade: {e}", file=sys.stderr)
        return 2


def _parser(command: str) -> argparse.ArgumentParser:
    from .plugin import DEFAULT_SEED, DEFAULT_TIMEOUT

    epilog = None
    if command == "grade":
        width = max(map(len, COMMANDS))
        epilog = "commands:\n" + "\n".join(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items())
        epilog += "\n\n'dsgrade COMMAND --help' describes each."
    p = argparse.ArgumentParser(prog=f"dsgrade {command}" if command != "grade" else "dsgrade",
                                description=COMMANDS[command][0].upper() + COMMANDS[command][1:] + ".",
                                epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    if command == "reset":
        p.add_argument("exercise", metavar="EXERCISE", help="e.g. ep05.SelfAttention")
    if command == "watch":
        p.add_argument("selectors", nargs="*", metavar="EPISODE_OR_EXERCISE",
                       help="grade these at every save (default: the saved file's episode and those importing it)")
    if command in ("grade", "list", "reset", "watch"):
        p.add_argument("--target", default="exercises",
                       help="exercises (default), solutions, or a folder of epNN_*.py files")
    if command == "grade":
        p.add_argument("selectors", nargs="*", metavar="EPISODE_OR_EXERCISE",
                       help="e.g. ep05 or ep05.scaled_dot_product_attention (default: everything)")
    if command in ("grade", "watch"):
        p.add_argument("--seed", type=int, default=None,
                       help=f"seed of the checks' inputs (default {DEFAULT_SEED}; in a student release, the seed "
                            "its public checks were recorded with)")
    if command in ("batch", "gradescope", "fixtures", "notebooks", "release"):
        p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                       help="seed of the checks' inputs (default %(default)s)" + SEED_ADVICE.get(command, ""))
    if command in ("grade", "batch", "watch"):
        p.add_argument("--timeout", type=positive_seconds, default=DEFAULT_TIMEOUT,
                       help="seconds each check may take (default %(default)s)")
        p.add_argument("--sandbox", choices=sandbox.MODES, default="auto",
                       help="auto (default): run student code in the OS sandbox where this machine has one; "
                            "strict: refuse to grade without it; off: no sandbox")
        p.add_argument("--memory", type=parse_size, default=sandbox.DEFAULT_MEMORY, metavar="SIZE",
                       help="memory student code may allocate per episode, e.g. 512M or 4G (default 2G)")
    if command == "grade":
        p.add_argument("--json", metavar="FILE",
                       help="write the dsgrade/1 JSON report to FILE ('-': to standard output, the table to stderr)")
        p.add_argument("--fixtures", metavar="FILE", help="expected outputs recorded by 'dsgrade fixtures'")
        p.add_argument("--junitxml", metavar="FILE", help="also write a JUnit XML report")
        p.add_argument("-v", "--verbose", action="store_true", help="show passing checks and every failure")
        p.add_argument("-x", "--exitfirst", action="store_true", help="stop at the first failing check")
    if command == "batch":
        p.add_argument("submissions", metavar="SUBMISSIONS_DIR",
                       help="one entry per student: a folder of epNN_*.py files, a .zip of them, or nbgrader's "
                            "submitted/<student>/<assignment>/ folders")
        p.add_argument("--out", required=True, metavar="OUT_DIR", help="where the reports go")
        p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="students graded at once "
                                                                             "(default: the number of cores)")
        p.add_argument("--submission-timeout", type=positive_seconds, default=600.0, metavar="S",
                       help="seconds one submission may take in all (default %(default)s)")
        p.add_argument("--shard", type=parse_shard, metavar="I/N",
                       help="grade only the I-th of N equal shares of the students (for a Slurm array, a "
                            "Kubernetes indexed Job …); combine the outputs with 'dsgrade merge'")
        p.add_argument("--resume", action="store_true", help="keep the reports already in OUT_DIR")
    if command == "merge":
        p.add_argument("shards", nargs="+", metavar="SHARD_OUT_DIR", help="the --out folders of the shards")
        p.add_argument("--out", required=True, metavar="OUT_DIR", help="where the combined outputs go")
    if command == "sync":
        p.add_argument("--force", action="store_true", help="overwrite exercise files you have edited")
        p.add_argument("--check", action="store_true", help="change nothing; exit 1 if exercises/ is stale")
    if command == "fixtures":
        p.add_argument("file", help="where to write the recorded reference outputs")
    if command == "notebooks":
        p.add_argument("course_dir", metavar="COURSE_DIR", help="the nbgrader course directory to write")
    if command == "release":
        p.add_argument("out_dir", metavar="OUT_DIR", help="a new folder for the student project")
    if command == "gradescope":
        p.add_argument("zip", metavar="OUT.zip", help="the autograder zip to write")
    if command in ("batch", "gradescope"):  # after the command's own positional arguments
        p.add_argument("selectors", nargs="*", metavar="EPISODE", help="e.g. ep05 (default: every episode)")
    return p


def positive_seconds(text: str) -> float:
    """A ``--timeout``: a number of seconds greater than 0."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds greater than 0")
    return seconds


def output_problem(option: str, path: str | None) -> str | None:
    """Why a report cannot be written to ``path`` (checked before grading, not after), or None."""
    if path is None or path == "-" and option == "--json":
        return None
    folder = Path(path).expanduser().absolute().parent
    if not folder.is_dir():
        return f"{option} {path}: there is no folder {folder}"
    if Path(path).is_dir():
        return f"{option} {path}: that is a folder; name a file"
    return None


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard I/N``: shard I (1-based) of N."""
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a shard I/N with 1 ≤ I ≤ N, e.g. 2/8")
    return int(m.group(1)), int(m.group(2))


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


def _console(stderr: bool = False):
    """A terminal's own width; in logs and pipes 160 columns (instead of rich's 80, unless $COLUMNS says)
    and no padding at the ends of lines."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(highlight=False, stderr=stderr)
    width = None if "COLUMNS" in os.environ else 160
    return Console(highlight=False, width=width, file=_Unpadded(stream))


class _Unpadded:
    """A text stream that drops the spaces rich pads lines with (a table, a title) before it writes them."""

    def __init__(self, stream):
        self.stream, self.pending = stream, ""

    def write(self, text: str) -> int:
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        for line in lines:
            self.stream.write(line.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.stream.write(self.pending.rstrip())
            self.pending = ""
        self.stream.flush()

    def isatty(self) -> bool:
        return False


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


class _Session:
    """dsgrade's own plugin in the pytest run: keeps the config (for the grader's records) and, on a
    terminal, shows which check runs and how many are left."""

    config = None

    def __init__(self, show_progress: bool):
        self.show_progress = show_progress
        self.progress = self.task = None

    def pytest_configure(self, config):
        self.config = config

    def pytest_collection_finish(self, session):
        if self.show_progress and session.items:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("grading {task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self.task = self.progress.add_task("", total=len(session.items))
            self.progress.start()

    def pytest_runtest_logstart(self, nodeid, location):
        if self.progress is not None:
            self.progress.update(self.task, description=nodeid.split("::", 1)[-1])  # the check's id

    def pytest_runtest_logfinish(self, nodeid, location):
        if self.progress is not None:
            self.progress.advance(self.task)

    def pytest_sessionfinish(self, session):
        if self.progress is not None:
            self.progress.stop()


def grade(*, selectors: list[str], target: str = "exercises", seed: int | None = None, json_path: str | None = None,
          verbose: bool = False, exitfirst: bool = False, timeout: float = 5.0, fixtures: str | None = None,
          junitxml: str | None = None, sandbox_mode: str = "auto", memory: int = sandbox.DEFAULT_MEMORY,
          console=None) -> int:
    """Grades a target and prints the report; returns the exit status."""
    import pytest

    from .plugin import grader_of
    from .report import build_report, render

    to_stdout = json_path == "-"
    console = console or _console(stderr=to_stdout)
    targets.resolve(target)
    problem = (check_selectors(selectors) or output_problem("--json", json_path)
               or output_problem("--junitxml", junitxml))
    missing = sandbox.missing_layers(sandbox_mode)
    if sandbox_mode == "strict" and missing:
        problem = sandbox.refusal(missing)
    if problem:
        print(f"dsgrade: {problem}", file=sys.stderr)
        return 2
    args = [str(registry.CHECKS_DIR), "-c", str(INI), "-p", "autograder.plugin", "-p", "no:terminal",
            "-p", "no:cacheprovider", "--dsgrade-target", target,
            "--dsgrade-timeout", str(timeout), "--dsgrade-sandbox", sandbox_mode, "--dsgrade-memory", str(memory)]
    if seed is not None:  # else the seed the expected outputs were recorded with (a release), or the default
        args += ["--dsgrade-seed", str(seed)]
    for sel in selectors:
        args += ["--dsgrade-select", sel]
    if fixtures:
        args += ["--dsgrade-fixtures", fixtures]
    if json_path and not to_stdout:
        args += ["--dsgrade-json", json_path]
    if junitxml:
        args += ["--junitxml", junitxml]
    if exitfirst:
        args.append("-x")
    catcher = _Session(show_progress=sys.stderr.isatty())
    code = pytest.main(args, plugins=[catcher])
    if code == pytest.ExitCode.USAGE_ERROR:
        return 2  # pytest has printed the one line that says why
    if catcher.config is None or code not in (0, 1):
        print(f"dsgrade: the grader could not run (pytest exit status {int(code)})", file=sys.stderr)
        return 2
    report = build_report(grader_of(catcher.config))
    render(report, console, verbose=verbose)
    if to_stdout:
        sys.stdout.write(report.to_json_text())
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
        if any(c.status == "skipped" for c in ex.checks):
            continue  # not every check ran (-x): keep the last complete status
        state[ex.id] = {"status": ex.status, "score": ex.score, "max_score": ex.max_score}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state, indent=1))
    except OSError:
        pass  # a read-only home must not stop grading


def list_exercises(*, target: str = "exercises", console=None) -> int:
    """Prints episodes and exercises with points and the last status (in a student release, the points
    of the hidden checks apart: the instructor grades those)."""
    from rich.table import Table

    from .reference import PACKAGED_FIXTURES

    console = console or _console()
    target_dir = targets.resolve(target)
    try:
        state = json.loads(_state_file(target_dir).read_text())
    except (OSError, ValueError):
        state = {}
    release = PACKAGED_FIXTURES.exists()
    columns = ["exercise", "checks", "points"] + (["hidden points (instructor)"] if release else []) + ["last status"]
    table = Table(show_edge=False, pad_edge=False)
    for col in columns:
        table.add_column(col, justify="left" if col in ("exercise", "last status") else "right")

    def points(checks, hidden: bool) -> float:
        return sum(c.points * len(c.cases) for c in checks if c.hidden == hidden or not release and not hidden)

    public_total = hidden_total = 0.0
    for ep in registry.all_episodes():
        checks = [c for ex in ep.exercises for c in ex.checks]
        extra = [f"[bold]{points(checks, True):g}[/]"] if release else []
        table.add_row(f"[bold]{ep.id}  {ep.title}[/]", "", f"[bold]{points(checks, False):g}[/]", *extra, "")
        if ep.video:
            table.add_row(f"  [dim]video: {ep.video}[/]", "", "", *([""] if release else []), "")
        for ex in ep.exercises:
            last = state.get(ex.id)
            status = f"{last['status'].replace('_', ' ')} ({last['score']:g})" if last else "[dim]not graded yet[/]"
            n = sum(len(c.cases) for c in ex.checks if not (release and c.hidden))
            extra = [f"{points(ex.checks, True):g}"] if release else []
            table.add_row(f"  {ex.id}", str(n), f"{points(ex.checks, False):g}", *extra, status)
        public_total += points(checks, False)
        hidden_total += points(checks, True) if release else 0.0
    console.print(table)
    summary = f"{public_total:g} points in all"
    if release:
        summary = f"{public_total:g} points of public checks here, {hidden_total:g} of hidden checks graded by your instructor"
    console.print(f"\n{summary}. Grade with: dsgrade [EPISODE_OR_EXERCISE …]")
    return 0


def watch(args) -> int:
    """Re-grades on every save (see :mod:`autograder.watch`)."""
    from .watch import watch as do_watch

    problem = check_selectors(args.selectors)
    missing = sandbox.missing_layers(args.sandbox)
    if args.sandbox == "strict" and missing:
        problem = sandbox.refusal(missing)
    if problem:
        raise targets.TargetError(problem)
    return do_watch(selectors=args.selectors, target=args.target, seed=args.seed, timeout=args.timeout,
                    sandbox_mode=args.sandbox, memory=args.memory, console=_console())


def reset(*, exercise: str, target: str = "exercises") -> int:
    """Puts one exercise back as handed out (see :mod:`autograder.reset`)."""
    from .reset import reset as do_reset

    path, backup = do_reset(exercise, targets.resolve(target))
    print(f"reset {exercise} in {path}; your version is saved in {backup}")
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


def release(*, out_dir: Path, seed: int = 1234) -> int:
    """Writes the student project (see :mod:`autograder.release`)."""
    from .release import ReleaseError, build_release

    try:
        files = build_release(out_dir, seed)
    except ReleaseError as e:
        raise targets.TargetError(str(e)) from None
    print(f"wrote {len(files)} files in {out_dir}: exercises/, the grader, public fixtures (seed {seed}), README.md")
    print(f"students: pip install torch==2.13.0 && pip install -e {out_dir} && dsgrade")
    return 0


def episodes_of(selectors: list[str]) -> list[str]:
    """The episodes named (course order), or all of them; raises TargetError for an unknown one."""
    problem = check_selectors([s for s in selectors if "." not in s]) or (
        "name episodes here (ep05), not exercises" if any("." in s for s in selectors) else None)
    if problem:
        raise targets.TargetError(problem)
    return [e for e in registry.episode_ids() if not selectors or e in selectors]


def batch(args) -> int:
    """Grades a class (see :mod:`autograder.batch`)."""
    from .batch import run_batch

    submissions = Path(args.submissions)
    if not submissions.is_dir():
        raise targets.TargetError(f"SUBMISSIONS_DIR {submissions}: no such folder")
    missing = sandbox.missing_layers(args.sandbox)
    if args.sandbox == "strict" and missing:
        raise targets.TargetError(sandbox.refusal(missing))
    console = _console(stderr=True)
    code = run_batch(submissions, Path(args.out), jobs=args.jobs, seed=args.seed, timeout=args.timeout,
                     submission_timeout=args.submission_timeout, sandbox_mode=args.sandbox, memory=args.memory,
                     episodes=episodes_of(args.selectors), shard=args.shard, resume=args.resume, console=console)
    print(f"wrote {args.out}/grades.csv, {args.out}/report.html and one <student>.json per student")
    return code


def merge(args) -> int:
    from .batch import merge as do_merge

    code = do_merge([Path(d) for d in args.shards], Path(args.out))
    print(f"wrote {args.out}/grades.csv and {args.out}/report.html")
    return code


def gradescope(args) -> int:
    from .gradescope import build_zip

    build_zip(Path(args.zip), seed=args.seed, episodes=episodes_of(args.selectors))
    print(f"wrote {args.zip}: upload it as the assignment's autograder (Gradescope: Configure Autograder → zip)")
    return 0


_RUN = {
    "grade": lambda a: grade(selectors=a.selectors, target=a.target, seed=a.seed, json_path=a.json,
                             verbose=a.verbose, exitfirst=a.exitfirst, timeout=a.timeout, fixtures=a.fixtures,
                             junitxml=a.junitxml, sandbox_mode=a.sandbox, memory=a.memory),
    "list": lambda a: list_exercises(target=a.target),
    "reset": lambda a: reset(exercise=a.exercise, target=a.target),
    "watch": lambda a: watch(a),
    "sync": lambda a: sync(force=a.force, check=a.check),
    "fixtures": lambda a: record(path=Path(a.file), seed=a.seed),
    "notebooks": lambda a: notebooks(course_dir=Path(a.course_dir), seed=a.seed),
    "release": lambda a: release(out_dir=Path(a.out_dir), seed=a.seed),
    "batch": batch,
    "merge": merge,
    "gradescope": gradescope,
}
