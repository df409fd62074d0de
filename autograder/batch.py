"""``dsgrade batch``: a class graded at once — a report per student, ``grades.csv`` and a class report.

SUBMISSIONS_DIR holds one entry per student, and the entry's name is the student id:

* a folder of ``epNN_*.py`` files;
* a ``.zip`` of them (members at any depth; only regular ``.py`` files are taken);
* nbgrader's ``submitted/<student>/<assignment>/*.py``: a student folder whose modules sit one
  level down, in one folder per assignment.

The reference is computed once for the class (every student has the same seed) and written to a
file the jobs read; misconception outputs, needed only for hints, are computed by each job on
demand and kept for the next student. ``--jobs`` processes each keep one sandboxed worker
(:mod:`autograder.worker`) for all the students they grade and use the same :class:`Grader`
as ``dsgrade``, so a student's scores equal what ``dsgrade --target THAT_FOLDER --seed N``
gives. A submission that hangs, crashes or attacks costs only its own time (``--timeout`` per
check, ``--submission-timeout`` in all) and gets its own row; the batch always writes every file.
"""

from __future__ import annotations

import concurrent.futures
import csv
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import registry, targets
from .submission import MAX_ENTRIES, MAX_FILE_BYTES, MAX_TOTAL_BYTES, MODULE_FILE, copy_submission, remove_tree
from .untrusted import clean_text, format_bytes

GRADES_FILE = "grades.csv"
CLASS_REPORT = "report.html"
SHARD_FILE = ".dsgrade-shard"  # JSON: which share of the class a folder holds (not *.json: no student report)


@dataclass(frozen=True)
class Entry:
    """One student's submission: its id and where it is (a folder or a ``.zip``)."""

    student: str
    path: Path


@dataclass
class Settings:
    """What every job needs to grade a student, the same for the whole class."""

    out_dir: str
    reference: str  # the file of expected values recorded once for the class
    seed: int
    timeout: float
    submission_timeout: float
    sandbox_mode: str
    memory: int
    episodes: list[str]
    protected: list[str]


def find_submissions(root: Path) -> list[Entry]:
    """The students in SUBMISSIONS_DIR, sorted by id; ids are made safe as file names and unique."""
    entries, seen = [], set()
    for path in sorted(Path(root).iterdir()):
        if path.name.startswith(".") or not (path.is_dir() or path.suffix == ".zip" and path.is_file()):
            continue
        student = re.sub(r"[^A-Za-z0-9._@+-]", "_", path.stem if path.suffix == ".zip" else path.name)[:100]
        while student in seen:
            student += "_"
        seen.add(student)
        entries.append(Entry(student, path))
    return entries


def select_shard(entries: list[Entry], shard: tuple[int, int] | None) -> list[Entry]:
    """Shard ``I/N`` of the students: every N-th one from the I-th (1-based), in id order."""
    if shard is None:
        return entries
    i, n = shard
    return [e for k, e in enumerate(entries) if k % n == i - 1]


def stage(entry: Entry, into: Path) -> tuple[Path, dict[str, str]]:
    """A folder holding the submission's modules, and what was refused on the way.

    A plain folder is used as it is (the grader copies it safely); a zip is extracted, and the
    modules of a folder that holds them only in subfolders gathered (:func:`gather`), into ``into``.
    """
    if entry.path.suffix == ".zip":
        return into, _extract_zip(entry.path, into)
    if any(p.suffix == ".py" for p in entry.path.iterdir()):
        return entry.path, {}
    return into, gather(entry.path, into)


def gather(folder: Path, into: Path, depth: int = 3) -> dict[str, str]:
    """Copies the modules found in ``folder`` and its subfolders (nbgrader's ``<assignment>/``, a folder
    uploaded to Gradescope), never following links, flat into ``into``; returns what was refused."""
    refused: dict[str, str] = {}
    part = copy_submission(folder, Path(tempfile.mkdtemp(dir=into)))
    refused.update(part.refused)
    for name, data in part.files.items():
        if (into / name).exists():
            refused[name] = "a second file of that name (the first one was graded)"
        else:
            (into / name).write_bytes(data)
    if depth > 0:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()
                          and not p.name.startswith((".", "__"))):
            refused.update({f"{sub.name}/{k}": v for k, v in gather(sub, into, depth - 1).items()})
    return refused


def _extract_zip(path: Path, into: Path) -> dict[str, str]:
    """Extracts the ``.py`` modules of a (possibly hostile) zip into ``into``, flattened."""
    refused: dict[str, str] = {}
    total = 0
    with zipfile.ZipFile(path) as zf:
        for info in sorted(zf.infolist()[:MAX_ENTRIES], key=lambda i: i.filename):
            name = info.filename.rsplit("/", 1)[-1]
            shown = clean_text(info.filename, 120)
            if info.is_dir() or not name.endswith(".py") or "__MACOSX" in info.filename:
                continue
            if not MODULE_FILE.fullmatch(name):
                refused[shown] = "not a valid Python module name"
            elif (info.external_attr >> 16) & 0o170000 not in (0, 0o100000):
                refused[shown] = "not a regular file (a link?)"
            elif (into / name).exists():
                refused[shown] = "a second file of that name (the first one was graded)"
            else:
                with zf.open(info) as member:  # never trust the sizes the zip claims
                    data = member.read(min(MAX_FILE_BYTES, MAX_TOTAL_BYTES - total) + 1)
                if len(data) > MAX_FILE_BYTES:
                    refused[shown] = f"over the limit of {format_bytes(MAX_FILE_BYTES)} per file"
                elif total + len(data) > MAX_TOTAL_BYTES:
                    refused[shown] = f"it takes the submission over {format_bytes(MAX_TOTAL_BYTES)} in all"
                else:
                    (into / name).write_bytes(data)
                    total += len(data)
    return refused


# --- the jobs -----------------------------------------------------------------------------------------------

_JOB: dict = {}  # in each job process: its worker and the reference


def _start_job(settings: Settings) -> None:
    """A job process's set-up: one sandboxed worker for every student it grades."""
    import multiprocessing.util

    from .plugin import worker_config
    from .worker import Worker

    worker = Worker(worker_config(settings.sandbox_mode, settings.memory, [Path(p) for p in settings.protected],
                                  settings.episodes))
    worker.start()
    multiprocessing.util.Finalize(None, worker.close, exitpriority=10)
    # Then leave without tearing torch down (a second or so per job); the job has nothing else to clean up.
    multiprocessing.util.Finalize(None, os._exit, args=(0,), exitpriority=1)
    _JOB.update(worker=worker, settings=settings)


def _reference(settings: Settings):
    if "reference" not in _JOB:
        from .reference import FixtureReference, LiveReference

        _JOB["reference"] = FixtureReference(Path(settings.reference), fallback=LiveReference())
    return _JOB["reference"]


def grade_entry(entry: Entry) -> dict:
    """Grades one student in this job process; writes OUT_DIR/<student>.json and returns its row."""
    from .plugin import Grader

    settings: Settings = _JOB["settings"]
    staging = Path(tempfile.mkdtemp(prefix="dsgrade-stage-"))
    try:
        folder, refused = stage(entry, staging)
        grader = Grader(entry.student, folder, settings.seed, settings.timeout, _reference(settings),
                        settings.sandbox_mode, settings.memory, worker=_JOB["worker"])
        try:
            grader.submission.refused.update(refused)
            grader.submission.label = f"{entry.student}'s submission"
            report = grade_everything(grader, settings.episodes, settings.submission_timeout)
            report["target_path"] = str(entry.path)  # the folder or zip handed in, not the staging copy
        finally:
            grader.close()
    except Exception as e:  # noqa: BLE001 - a submission that cannot be graded at all still gets a row
        report = error_report(entry.student, f"{type(e).__name__}: {clean_text(e, 500)}", settings.seed,
                              settings.episodes)
    finally:
        remove_tree(staging)
    write_report(Path(settings.out_dir), entry.student, report)
    return row_of(report)


def grade_everything(grader, episodes: list[str], seconds: float) -> dict:
    """Runs every check of ``episodes`` (course order) with ``grader``, within ``seconds`` in all;
    returns the dsgrade/1 report. Checks past the time limit are recorded as timeouts."""
    from .report import build_report

    grader.selected = [(chk, c) for ep_id in episodes for ex in registry.load_episode(ep_id).exercises
                       for chk in ex.checks for c in chk.cases]
    deadline = grader.deadline = time.monotonic() + seconds
    for chk, c in grader.selected:
        if time.monotonic() < deadline:
            grader.grade(chk, c)
        else:
            grader.records[chk.item_id(c)] = _out_of_time(chk, c, seconds)
    return build_report(grader).to_json()


def _out_of_time(check, c, seconds: float):
    from .grading import record_for

    return record_for(check, c, "timeout", f"not run: the submission used up its time limit of {seconds:g} s "
                                           "(--submission-timeout)")


def error_report(student: str, message: str, seed: int, episodes: list[str]) -> dict:
    """The report of a student whose submission could not be graded at all."""
    max_score = sum(registry.load_episode(e).max_score for e in episodes)
    return {"schema": "dsgrade/1", "target": student, "seed": seed, "score": 0.0, "max_score": max_score,
            "error": message, "episodes": [], "exercises": []}


def write_report(out_dir: Path, student: str, report: dict) -> None:
    """Writes OUT_DIR/<student>.json all at once (a half-written file never looks like a result)."""
    tmp = out_dir / f".{student}.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, out_dir / f"{student}.json")


def row_of(report: dict) -> dict:
    """What the gradebook and the class report need from one student's report."""
    return {"student": report["target"], "score": report["score"], "max_score": report["max_score"],
            "error": report.get("error", ""),
            "episodes": {ep["id"]: ep["score"] for ep in report["episodes"]},
            "exercises": {ex["id"]: ex["status"] for ex in report["exercises"]},
            "hints": sorted({(ex["id"], hint) for ex in report["exercises"] for c in ex["checks"]
                             for hint in c["hint"].splitlines() if hint})}


# --- the batch ----------------------------------------------------------------------------------------------


def run_batch(submissions: Path, out_dir: Path, *, jobs: int, seed: int, timeout: float,
              submission_timeout: float, sandbox_mode: str, memory: int, episodes: list[str],
              shard: tuple[int, int] | None = None, resume: bool = False, console=None) -> int:
    """Grades every submission; returns 0 when each was graded, 1 when some could not be.

    Args:
        submissions: SUBMISSIONS_DIR.
        out_dir: Where the reports, ``grades.csv`` and ``report.html`` go (made if missing).
        jobs: Processes grading in parallel.
        seed: The class's seed.
        timeout: Seconds per check.
        submission_timeout: Seconds per submission in all.
        sandbox_mode: ``--sandbox``.
        memory: ``--memory``.
        episodes: The episodes to grade (course order).
        shard: Grade only shard ``(i, n)`` of the students.
        resume: Keep the reports already in ``out_dir`` (same seed) and grade only the others.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .class_report import load_matplotlib
    from .reference import record_fixtures

    out_dir.mkdir(parents=True, exist_ok=True)
    # an --out folder inside SUBMISSIONS_DIR is not a student
    entries = select_shard([e for e in find_submissions(submissions) if e.path.resolve() != out_dir.resolve()],
                           shard)
    if shard is not None:
        (out_dir / SHARD_FILE).write_text(json.dumps({"shard": shard[0], "of": shard[1], "seed": seed,
                                                      "episodes": episodes}) + "\n")
    rows = {}
    if resume:
        rows = {e.student: r for e in entries if (r := _earlier_row(out_dir, e.student, seed)) is not None}
    todo = [e for e in entries if e.student not in rows]
    scratch = Path(tempfile.mkdtemp(prefix="dsgrade-batch-"))
    settings = Settings(str(out_dir), str(scratch / "reference.bin"), seed, timeout, submission_timeout,
                        sandbox_mode, memory, episodes, [str(Path(submissions).resolve()), str(out_dir.resolve()),
                                                         str(scratch)])
    # On Linux the jobs are forked once torch and the checks are loaded here, and inherit them: a
    # spawned job imported torch again (2 s of CPU each). macOS spawns (fork is unsafe there).
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    n_jobs = max(1, min(jobs, len(todo)))
    loaded = [registry.load_episode(e) for e in episodes] if todo else []
    try:
        with concurrent.futures.ProcessPoolExecutor(n_jobs, context, initializer=_start_job,
                                                    initargs=(settings,)) as pool:
            if todo:  # start every job now (a spawning pool starts one per task submitted), so that
                for _ in range(n_jobs):  # their workers import torch while this process records the reference
                    pool.submit(os.getpid)
                record_fixtures(loaded, seed, Path(settings.reference), misconceptions=False)
            with Progress(TextColumn("grading"), BarColumn(), MofNCompleteColumn(), TextColumn("students"),
                          TimeRemainingColumn(), console=console, transient=False) as progress:
                task = progress.add_task("grading", total=len(todo))
                left = len(todo)

                def advance():
                    nonlocal left
                    progress.advance(task)
                    left -= 1
                    if left == n_jobs - 1:  # from now on a job has no student left:
                        load_matplotlib()  # load what the class report needs on the core it frees

                rows.update(_grade_all(pool, todo, settings, advance))
            pool.shutdown(wait=False)  # the jobs end while the class report is drawn
            rows_in_order = [rows[e.student] for e in entries]
            write_outputs(out_dir, rows_in_order, episodes, seed)
    finally:
        remove_tree(scratch)
    return 1 if any(r["error"] for r in rows_in_order) else 0


def _grade_all(pool, todo: list[Entry], settings: Settings, advance) -> dict:
    """Grades ``todo`` in ``pool``; a job that dies costs its student a row with the error, not the batch."""
    rows = {}
    futures = {pool.submit(grade_entry, e): e for e in todo}
    for future in concurrent.futures.as_completed(futures):
        entry = futures[future]
        try:
            rows[entry.student] = future.result()
        except Exception as e:  # noqa: BLE001 - e.g. the job process was killed
            report = error_report(entry.student, f"the grading process failed: {type(e).__name__}: {e}",
                                  settings.seed, settings.episodes)
            write_report(Path(settings.out_dir), entry.student, report)
            rows[entry.student] = row_of(report)
        advance()
    return rows


def _earlier_row(out_dir: Path, student: str, seed: int) -> dict | None:
    """The row of a report already in ``out_dir`` for ``student`` with this seed (for ``--resume``)."""
    try:
        report = json.loads((out_dir / f"{student}.json").read_text())
    except (OSError, ValueError):
        return None
    if report.get("seed") != seed or report.get("error"):
        return None
    return row_of(report)


def merge(shard_dirs: list[Path], out_dir: Path) -> int:
    """``dsgrade merge``: one gradebook and class report from the outputs of several shards."""
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = {}
    for folder in shard_dirs:
        for path in sorted(Path(folder).glob("*.json")):
            report = json.loads(path.read_text())
            if report.get("schema") != "dsgrade/1":
                continue
            if report["target"] in reports and reports[report["target"]] != report:
                raise targets.TargetError(f"{report['target']} was graded differently in two shards")
            reports[report["target"]] = report
    if not reports:
        raise targets.TargetError(f"no dsgrade/1 reports in {', '.join(map(str, shard_dirs))}")
    seeds = {r["seed"] for r in reports.values()}
    if len(seeds) > 1:
        raise targets.TargetError(f"the shards were graded with different seeds: {sorted(seeds)}")
    graded_on = {tuple(ep["id"] for ep in r["episodes"]) for r in reports.values() if not r.get("error")}
    if len(graded_on) > 1:
        raise targets.TargetError("the shards were graded on different episodes: "
                                  + "; ".join(" ".join(eps) for eps in sorted(graded_on)))
    missing = _missing_shards(shard_dirs)
    for student, report in sorted(reports.items()):
        write_report(out_dir, student, report)
    rows = [row_of(reports[s]) for s in sorted(reports)]
    episodes = list(dict.fromkeys(ep for r in rows for ep in r["episodes"])) or registry.episode_ids()
    write_outputs(out_dir, rows, episodes, seeds.pop())
    if missing:
        print(f"dsgrade merge: {missing}; the gradebook lacks their students", file=sys.stderr)
    return 1 if missing or any(r["error"] for r in rows) else 0


def _missing_shards(shard_dirs: list[Path]) -> str:
    """What is missing of the shards the folders say they are (``shard 2 of 4 is not among them``), or ""."""
    found = []
    for folder in shard_dirs:
        try:
            found.append(json.loads((Path(folder) / SHARD_FILE).read_text()))
        except (OSError, ValueError):
            continue  # a folder graded without --shard: the whole class, or a folder of reports
    counts = {f.get("of") for f in found}
    if len(counts) > 1:
        raise targets.TargetError(f"the folders are shards of different splits (of {sorted(counts)})")
    if not found:
        return ""
    n = counts.pop()
    absent = sorted(set(range(1, n + 1)) - {f.get("shard") for f in found})
    if not absent:
        return ""
    return (f"shard{'s' if len(absent) > 1 else ''} {', '.join(map(str, absent))} of {n} "
            f"{'are' if len(absent) > 1 else 'is'} not among them")


def write_outputs(out_dir: Path, rows: list[dict], episodes: list[str], seed: int) -> None:
    """``grades.csv`` (student, total, max, one column per episode, error) and the class report."""
    from .class_report import class_report

    with open(out_dir / GRADES_FILE, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "total", "max", *episodes, "error"])
        for r in rows:
            writer.writerow([r["student"], f"{r['score']:g}", f"{r['max_score']:g}",
                             *(f"{r['episodes'].get(ep, 0):g}" for ep in episodes), r["error"]])
    (out_dir / CLASS_REPORT).write_text(class_report(rows, episodes, seed))
