"""``dsgrade watch``: re-grade on every save, in a fraction of a second.

One process keeps what is slow to start: the grader, with torch and the checks imported and the
reference's outputs cached, and its worker's zygote. On every save (``watchfiles``, the inotify
watcher of uvicorn and others) a *round* copies the target afresh into a new scratch folder and
grades, with the same :class:`~autograder.plugin.Grader` as ``dsgrade``, what is selected: the
named episodes or exercises, or else the episode of each saved file plus the episodes that import
it. Each episode of each round runs in a freshly forked child that imports the saved files anew, so
an edit is always seen and a crash or a hang costs only that round. Between rounds the zygote
already forks the next round's first child, so a save costs the import and the checks only.
Ctrl-C ends the watch; the worker and everything it started end with it.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from . import registry, targets
from .submission import MODULE_FILE, new_scratch

_IMPORT = re.compile(rb"^\s*from\s+\.(\w+)\s+import", re.M)
READY = "watching {} for changes (Ctrl-C to stop)"


def selection(selectors: list[str], changed: set[str], sources: dict[str, bytes]) -> list[str]:
    """What a round grades: the selectors, or else the episodes of the changed modules and of every
    module that imports one of them (directly or not), in course order.

    Args:
        selectors: ``ep05`` / ``ep05.SelfAttention`` given on the command line.
        changed: Module names (``ep05_self_attention``, ``config``) whose files changed.
        sources: The submission's files by name (its imports tell who depends on whom).
    """
    if selectors:
        return list(selectors)
    imports = {name[:-3]: set(m.decode() for m in _IMPORT.findall(data)) for name, data in sources.items()}
    affected, grew = set(changed), True
    while grew:
        more = {m for m, deps in imports.items() if deps & affected} - affected
        affected |= more
        grew = bool(more)
    return [e for e in registry.episode_ids() if registry.load_episode(e).module in affected]


def watch(*, selectors: list[str], target: str, seed: int, timeout: float, sandbox_mode: str, memory: int,
          console) -> int:
    """Grades ``selectors`` now (if any), then again at every save, until Ctrl-C."""
    import signal

    import watchfiles

    from .plugin import Grader, worker_config
    from .reference import choose_reference
    from .worker import Worker

    target_dir = targets.resolve(target)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` ends the watch as Ctrl-C does: cleanly
    worker = Worker(worker_config(sandbox_mode, memory, [target_dir], registry.episode_ids()))
    worker.start()
    reference = choose_reference()
    shown = _display(target_dir)
    try:
        next_scratch = new_scratch(worker.root)
        if selectors:
            next_scratch = _round(Grader, worker, reference, selectors, set(), target, target_dir, seed, timeout,
                                  sandbox_mode, memory, next_scratch, console)
        console.print(READY.format(shown))
        files = (lambda change, path: MODULE_FILE.fullmatch(Path(path).name) is not None
                 and Path(path).parent == target_dir)
        for changes in watchfiles.watch(target_dir, watch_filter=files, step=20, debounce=400, recursive=False):
            changed = {Path(path).stem for _, path in changes}
            next_scratch = _round(Grader, worker, reference, selectors, changed, target, target_dir, seed, timeout,
                                  sandbox_mode, memory, next_scratch, console)
            console.print(READY.format(shown))
    except KeyboardInterrupt:
        pass
    finally:
        worker.close()
    console.print("stopped watching")
    return 0


def _round(Grader, worker, reference, selectors, changed, target, target_dir, seed, timeout, sandbox_mode, memory,
           scratch, console) -> Path:
    """Grades one round in ``scratch``; returns the scratch folder of the next round, its child forked."""
    from .report import build_report, render

    start = time.monotonic()
    grader = Grader(target, target_dir, seed, timeout, reference, sandbox_mode, memory, worker=worker,
                    scratch=scratch)
    try:
        wanted = selection(selectors, changed, grader.submission.files)
        grader.selected = [(chk, c) for ep in wanted if ep.split(".")[0] in registry.episode_ids()
                           for ex in registry.load_episode(ep.split(".")[0]).exercises
                           for chk in ex.checks for c in chk.cases if _selected(wanted, chk, c)]
        for chk, c in grader.selected:
            grader.grade(chk, c)
        console.clear()
        if grader.selected:
            render(build_report(grader), console)
            console.print(f"[dim]graded in {time.monotonic() - start:.2f} s[/]")
        else:
            console.print(f"saved {', '.join(sorted(changed))}: no episode to grade")
    finally:
        grader.close()
    following = new_scratch(worker.root)
    first = next((chk.exercise.episode.id for chk, _ in grader.selected), None)
    if first:
        worker.prepare(first, following, timeout)  # the next round's first child, forked while the student types
    return following


def _selected(wanted: list[str], check, c) -> bool:
    ids = (check.exercise.episode.id, check.exercise.id, check.item_id(c))
    return any(s in ids for s in wanted)


def _display(path: Path) -> str:
    from .report import _display_path

    return _display_path(path) + "/"
