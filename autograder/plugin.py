"""The pytest plugin: one pytest item per check and case, graded in a worker.

Load it with ``pytest -p autograder.plugin <path to autograder/checks>``; the
``dsgrade`` command does exactly that. Every check becomes an item named by its
id (``ep05.scaled_dot_product_attention::random_b2_t5_d8``) and marked with its
episode (``-m ep05``) and ``public``/``hidden``, so ``-k``, ``-x``, ``-m`` and
``--junitxml`` work as usual. The plugin keeps a :class:`~autograder.grading.CheckRecord`
per item; the score and the reports are built from those records.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from . import dependencies, registry, sandbox, targets
from .compare import diagnose
from .grading import CheckRecord, evaluate, record_for
from .reference import ReferenceFailure, choose_reference
from .submission import copy_submission, new_scratch, remove_tree
from .worker import OUT_OF_BUDGET, Worker, WorkerError

DEFAULT_SEED = 1234
DEFAULT_TIMEOUT = 5.0
_GRADER = pytest.StashKey["Grader"]()


def pytest_addoption(parser):
    group = parser.getgroup("dsgrade", "DeepSeek-from-scratch autograder")
    group.addoption("--dsgrade-target", default="exercises",
                    help="exercises (default), solutions, or a folder of epNN_*.py files")
    group.addoption("--dsgrade-seed", type=int, default=None,
                    help=f"seed of all check inputs (default: the fixtures' seed, else {DEFAULT_SEED})")
    group.addoption("--dsgrade-timeout", type=float, default=DEFAULT_TIMEOUT,
                    help="seconds each check may take (default %(default)s)")
    group.addoption("--dsgrade-select", action="append", default=[],
                    help="grade only this episode (ep05) or exercise (ep05.scaled_dot_product_attention)")
    group.addoption("--dsgrade-fixtures", default=None,
                    help="read expected outputs from this fixtures file instead of solutions/")
    group.addoption("--dsgrade-json", default=None, help="write the dsgrade/1 JSON report here")
    group.addoption("--dsgrade-sandbox", default="auto", choices=sandbox.MODES,
                    help="auto (default): sandbox student code where the OS can; strict: refuse to grade "
                         "without the full sandbox; off: no sandbox")
    group.addoption("--dsgrade-memory", type=int, default=sandbox.DEFAULT_MEMORY,
                    help="bytes of memory student code may allocate per episode (default 2 GiB)")


def pytest_configure(config):
    for ep_id in registry.episode_ids():
        config.addinivalue_line("markers", f"{ep_id}: checks of episode {ep_id}")
    config.addinivalue_line("markers", "public: checks whose details students see")
    config.addinivalue_line("markers", "hidden: checks that show pass/fail and hints only")
    grader = Grader.from_config(config)
    config.stash[_GRADER] = grader
    # Start the worker before this process imports torch (with the checks): the two imports overlap.
    grader.worker.start()


def grader_of(config) -> "Grader":
    """The :class:`Grader` of a pytest session that loaded this plugin."""
    return config.stash[_GRADER]


def pytest_collect_file(file_path: Path, parent):
    if file_path.parent != registry.CHECKS_DIR or not registry.EPISODE_FILE.match(file_path.name):
        return None
    selectors = parent.config.getoption("--dsgrade-select")
    if selectors and not any(s.split(".")[0] == file_path.stem for s in selectors):
        return None  # an episode nobody asked for: do not even import its checks
    return EpisodeFile.from_parent(parent, path=file_path)


def pytest_collection_modifyitems(session, config, items):
    order = {ep_id: i for i, ep_id in enumerate(registry.episode_ids())}  # course order; capstone last
    items.sort(key=lambda it: order[it.check.exercise.episode.id] if isinstance(it, CheckItem) else -1)
    selectors = config.getoption("--dsgrade-select")
    if selectors:
        keep = [it for it in items if isinstance(it, CheckItem) and it.selected_by(selectors)]
        kept = set(map(id, keep))
        dropped = [it for it in items if id(it) not in kept]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    grader = grader_of(config)
    if getattr(grader.reference, "public_only", False):  # a student release: hidden checks are not run
        hidden = [it for it in items if isinstance(it, CheckItem) and it.check.hidden]
        if hidden:
            config.hook.pytest_deselected(items=hidden)
        grader.instructor_checks = [(it.check, it.case) for it in hidden]
        items[:] = [it for it in items if not (isinstance(it, CheckItem) and it.check.hidden)]
    grader.selected = [(it.check, it.case) for it in items if isinstance(it, CheckItem)]


def pytest_sessionfinish(session, exitstatus):
    grader = grader_of(session.config)
    grader.close()
    path = session.config.getoption("--dsgrade-json")
    if path:
        from .report import build_report

        Path(path).write_text(build_report(grader).to_json_text())


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from .report import build_report

    report = build_report(grader_of(config))
    terminalreporter.write_sep("=", f"dsgrade score {report.score:g}/{report.max_score:g} (seed {report.seed})")


class EpisodeFile(pytest.File):
    """The checks module of one episode."""

    def collect(self):
        episode = registry.load_episode(self.path.stem)
        for ex in episode.exercises:
            for check in ex.checks:
                for c in check.cases:
                    yield CheckItem.from_parent(self, name=check.item_id(c), check=check, case=c)


class CheckFailed(Exception):
    """Raised by an item whose check did not pass; carries the record."""

    def __init__(self, record: CheckRecord):
        super().__init__(record.message)
        self.record = record


class CheckItem(pytest.Item):
    def __init__(self, *, check, case, **kwargs):
        super().__init__(**kwargs)
        self.check, self.case = check, case
        self.add_marker(check.exercise.episode.id)
        self.add_marker("hidden" if check.hidden else "public")

    def selected_by(self, selectors: list[str]) -> bool:
        ids = (self.check.exercise.episode.id, self.check.exercise.id, self.name)
        return any(s in ids for s in selectors)

    def runtest(self):
        record = grader_of(self.config).grade(self.check, self.case)
        if not record.passed:
            raise CheckFailed(record)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, CheckFailed):
            r = excinfo.value.record
            text = f"[{r.status}] {r.description}\n{r.message}"
            return text + (f"\nhint: {r.hint}" if r.hint else "")
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, self.name


class SandboxUnavailable(pytest.UsageError):
    """``--sandbox strict`` on a machine that cannot sandbox student code."""


class Grader:
    """Grades checks against one target; keeps a record per check.

    The target is copied into a fresh scratch folder first (:mod:`autograder.submission`);
    only that copy is graded, in a sandboxed worker (:mod:`autograder.worker`).

    Args:
        target: The ``--target`` value as given.
        target_dir: Its folder.
        seed: Session seed (each check's inputs use ``item_seed(seed, id)``); None: the one the reference
            was recorded with (a student release), else :data:`DEFAULT_SEED`.
        timeout: Seconds per check.
        reference: Where expected outputs come from.
        sandbox_mode: One of :data:`sandbox.MODES`.
        memory: Bytes student code may allocate per episode.
        protected: Paths student code must not read besides the built-in ones (fixtures, reports).
        episodes: Ids of the episodes that will be graded (the worker loads their checks once).
        worker: A worker to share (a batch grades many submissions with one), else the grader starts
            its own with the settings above.
        scratch: An empty scratch folder made in the worker's folder for this grader (``dsgrade watch``
            has the zygote fork a child for it ahead of time), else a new one.
    """

    def __init__(self, target: str, target_dir: Path, seed: int | None, timeout: float, reference,
                 sandbox_mode: str = "auto", memory: int = sandbox.DEFAULT_MEMORY, protected=(), episodes=(),
                 worker: Worker | None = None, scratch: Path | None = None):
        recorded = getattr(reference, "seed", None)  # fixtures hold one seed; the live reference any
        if seed is None:
            seed = DEFAULT_SEED if recorded is None else recorded
        if recorded not in (None, seed):
            raise targets.TargetError(f"the expected outputs were recorded with --seed {recorded}; "
                                      f"grade with that seed (--seed {recorded})")
        self.target, self.target_dir = target, target_dir
        self.seed, self.timeout, self.reference = seed, timeout, reference
        self.sandbox_mode, self.memory = sandbox_mode, memory
        self.missing = sandbox.missing_layers(sandbox_mode)
        if sandbox_mode == "strict" and self.missing:
            raise SandboxUnavailable(sandbox.refusal(self.missing))
        self.records: dict[str, CheckRecord] = {}
        self.selected: list = []
        self.instructor_checks: list = []  # in a student release: hidden checks, graded by the instructor
        self.blamed: dict[str, tuple[str, str]] = {}  # exercise -> (the dependency shown wrong, on which check)
        self.internal_errors: list[str] = []
        self.deadline: float | None = None  # time.monotonic() by which grading must end (a batch's limit)
        self._imports: dict[str, dict | None] = {}
        self._reference_failures: dict[str, ReferenceFailure] = {}  # item -> computing its reference failed
        self._order: tuple[list, dict] = ([], {})  # self.selected, and each item's place in it
        self.own_worker = worker is None
        self.worker = worker or Worker(worker_config(sandbox_mode, memory, [target_dir, *protected], episodes,
                                                     allow_solutions=target_dir == targets.SOLUTIONS_DIR))
        self.scratch = scratch or new_scratch(self.worker.root)
        try:
            self.submission = copy_submission(target_dir, self.scratch / "src", fill_from=targets.EXERCISES_DIR)
        except OSError as e:
            self.close()
            raise targets.TargetError(f"target {target!r}: cannot read {target_dir}: {e.strerror}") from None

    @classmethod
    def from_config(cls, config) -> "Grader":
        target = config.getoption("--dsgrade-target")
        try:
            target_dir = targets.resolve(target)
        except targets.TargetError as e:
            raise pytest.UsageError(str(e)) from None
        fixtures = config.getoption("--dsgrade-fixtures")
        try:
            reference = choose_reference(fixtures)
        except (OSError, ValueError) as e:
            raise pytest.UsageError(f"--fixtures {fixtures}: cannot read it ({e})") from None
        outputs = [config.getoption("--dsgrade-json"), getattr(config.option, "xmlpath", None), fixtures]
        selectors = config.getoption("--dsgrade-select")
        episodes = dict.fromkeys(s.split(".")[0] for s in selectors) if selectors else registry.episode_ids()
        try:
            return cls(target, target_dir, config.getoption("--dsgrade-seed"), config.getoption("--dsgrade-timeout"),
                       reference, config.getoption("--dsgrade-sandbox"), config.getoption("--dsgrade-memory"),
                       [Path(p).resolve() for p in outputs if p], list(episodes))
        except targets.TargetError as e:
            raise pytest.UsageError(str(e)) from None

    def sandbox_summary(self) -> dict:
        """What protected the run, for the report: mode, layers applied, what was missing and why."""
        ready = self.worker.sandbox or {}  # the zygote's own account, once it has started
        return {"mode": self.sandbox_mode, "applied": ready.get("applied", self.worker.config["layers"]),
                "missing": dict(self.missing, **ready.get("missing", {})),
                "landlock_abi": ready.get("landlock_abi"), "memory_limit": self.memory}

    def close(self) -> None:
        """Removes the scratch folder, and stops the worker if it is this grader's own."""
        if self.own_worker:
            self.worker.close()
        else:
            try:
                self.worker.forget(self.timeout)  # answers to checks this grader did not get to
            except WorkerError:
                pass
            remove_tree(self.scratch)

    def grade(self, check, c) -> CheckRecord:
        """Runs one check on the target and records the outcome (always: a check is never left ungraded)."""
        seed = registry.item_seed(self.seed, check.item_id(c))
        try:
            answer = self._import_failure(check)
            if answer is None:
                answer = self._probe(check, c, seed)
            if answer.pop("sandbox_failed", False):
                self.internal_errors.append(answer["message"])
            record = evaluate(check, c, seed, answer, self.reference)
            self._last_check = (check, c)
            dependencies.blame(record, answer, self)
        except ReferenceFailure as e:
            self.internal_errors.append(str(e))
            record = record_for(check, c, "error", f"internal error of the grader: {e}")
        except Exception as e:  # noqa: BLE001 - whatever went wrong is recorded against this check
            record = record_for(check, c, "error", "internal error of the grader while grading this check "
                                                   f"({type(e).__name__}: {str(e)[:300]}); please report it")
        self.records[record.id] = record
        return record

    def reference_call_problem(self, call: dict, hidden: bool) -> str | None:
        """How the student's recorded call of another exercise differs from the reference on the same
        arguments (the first line of the diagnosis), or None (it agrees, or no live reference)."""
        run = getattr(self.reference, "call", None)  # only the live reference can run on new arguments
        expected = run(call["exercise"], call["args"], call["kwargs"]) if run else None
        if expected is None:
            return None
        problems = diagnose(expected, call["result"], hidden=hidden)
        return problems[0] if problems else None

    def recorded_calls(self) -> list:
        """The calls the child recorded during the last check (asked for only when that check failed)."""
        check, c = self._last_check
        try:
            answer = self.worker.request(self._request(check, "calls", item=check.item_id(c)), self.timeout)
        except WorkerError:
            return []
        return answer.get("calls", []) if answer.get("status") == "ok" else []

    def fails_own_checks(self, exercise_id: str) -> bool:
        """True when an exercise has been graded in this run and not every check of it passed."""
        return any(r.exercise == exercise_id and not r.passed for r in self.records.values())

    def _request(self, check, op: str, **fields) -> dict:
        episode = check.exercise.episode
        request = {"op": op, "episode": episode.id, "module": episode.module, "scratch": str(self.scratch), **fields}
        if self.deadline is not None:  # the zygote cuts the request there, whatever each check's time limit
            request["budget"] = max(0.001, self.deadline - time.monotonic())
        return request

    def _probe(self, check, c, seed) -> dict:
        """The target's answer to one check. The first check of a run of selected checks of one episode
        asks the worker for the whole run at once (:meth:`Worker.probe`); the others find theirs read ahead."""
        item = check.item_id(c)
        try:
            answer = self.worker.answer(str(self.scratch), item, self.timeout)
            if answer is None:
                self._ask_for_run(check, c)
                answer = self.worker.answer(str(self.scratch), item, self.timeout)
        except WorkerError as e:
            answer = {"status": e.kind, "message": self._explain(e, "an infinite loop, or a very slow implementation?")}
        if item in self._reference_failures:
            raise self._reference_failures.pop(item)
        if answer is None:  # cannot happen: the run just asked for starts with this check
            answer = {"status": "error", "message": "the grader's worker did not answer this check"}
        return answer

    def _ask_for_run(self, check, c) -> None:
        """Sends one probe request for ``(check, c)`` and the selected checks of its episode after it."""
        run = []
        for chk, case in self._run_from(check, c):
            seed = registry.item_seed(self.seed, chk.item_id(case))
            try:
                given = self.reference.given(chk, case, seed)
            except ReferenceFailure:
                if not run:
                    raise
                break  # that check asks again (and fails) on its own
            run.append((chk, case, seed, given))
        request = self._request(check, "probe", items=[
            {"exercise": chk.exercise.id, "item": chk.item_id(case), "seed": seed, "given": given}
            for chk, case, seed, given in run])

        def compute_reference():  # on the grader's core while the worker runs the target
            for chk, case, seed, _ in run:
                try:
                    self.reference.expected(chk, case, seed)
                except ReferenceFailure as e:
                    self._reference_failures[chk.item_id(case)] = e

        self.worker.probe(request, self.timeout, meanwhile=compute_reference)

    def _run_from(self, check, c) -> list:
        """``(check, c)`` and the checks selected after it, up to the first of another episode."""
        selected, place = self._order
        if selected is not self.selected:  # (re)built when the selection is set
            place = {chk.item_id(case): k for k, (chk, case) in enumerate(self.selected)}
            self._order = (self.selected, place)
        k = place.get(check.item_id(c))
        if k is None:
            return [(check, c)]
        episode = check.exercise.episode.id
        run = []
        for chk, case in self.selected[k:]:
            if chk.exercise.episode.id != episode:
                break
            run.append((chk, case))
        return run

    def _import_failure(self, check) -> dict | None:
        """None if the check's episode module imports; else the answer every check of it gets."""
        episode = check.exercise.episode
        if episode.id not in self._imports:
            problem = self.submission.problem(episode.module)
            if problem:
                answer = {"status": "error", "message": problem}
            else:
                try:
                    answer = self.worker.request(self._request(check, "import", exercise=check.exercise.id),
                                                 self.timeout)
                except WorkerError as e:
                    answer = {"status": e.kind,
                              "message": self._explain(e, "code at the top level of the file that never ends?")}
                if answer["status"] != "ok":
                    answer = dict(answer, message=f"importing {episode.module}.py failed: {answer['message']}")
                    if answer["status"] == "not_implemented":  # a stub called at import time
                        answer["status"] = "error"
            self._imports[episode.id] = None if answer["status"] == "ok" else answer
        answer = self._imports[episode.id]
        return None if answer is None else dict(answer)

    def _explain(self, e: WorkerError, likely: str) -> str:
        if e.kind == "timeout" and str(e) == "timed out":
            return f"timed out after {self.timeout:g} s — {likely}"
        if e.kind == "timeout" and str(e) == OUT_OF_BUDGET:
            return f"not finished: the submission used up its time limit (--submission-timeout) — {likely}"
        return str(e)


def worker_config(sandbox_mode: str, memory: int, protected, episodes, allow_solutions: bool = False) -> dict:
    """The settings of a :class:`~autograder.worker.Worker` (see there) for a sandbox mode.

    Args:
        protected: Paths no child may read, besides the reference, the repository's history
            and the grader's state (always protected).
    """
    missing = sandbox.missing_layers(sandbox_mode)
    layers = [] if sandbox_mode == "off" else [layer for layer in sandbox.LAYERS if layer not in missing]
    return {"layers": layers, "memory": memory, "allow_solutions": allow_solutions, "episodes": list(episodes),
            "protected": [str(p) for p in [*_always_protected(), *protected]]}


def _always_protected() -> list[Path]:
    """What no child may read whatever the target: the reference, the repository's history, the
    grader's saved state, and any other installed copy of the solutions."""
    import importlib.util
    import os

    paths = [targets.SOLUTIONS_DIR, targets.ROOT / ".git",
             Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dsgrade"]
    try:
        spec = importlib.util.find_spec("solutions")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        paths += [Path(p) for p in spec.submodule_search_locations]
    return paths
