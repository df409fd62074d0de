"""The worker: the only processes that import and run the target's code.

With the sandbox on (Linux), grading runs three kinds of processes::

    grader ──pipes── waiter ── zygote: pid 1 of new user, pid, network and IPC namespaces
                                 └── child: one per episode, confined (Landlock, seccomp, limits),
                                     imports the target's private copy and runs the probes

The grader (parent) starts ``python -m autograder.worker CONFIG``. The *waiter*
moves itself into new namespaces before anything else and forks the *zygote*,
which is pid 1 there: it imports torch and the grader's modules once, never the
target's code, and for every episode forks a fresh *child* that confines itself
(:func:`autograder.sandbox.confine`) before it imports anything of the target.
One episode's child never serves another episode, so a thread, a signal handler
or a monkeypatch left by one cannot touch the next. A child that runs past its
time limit is killed; one that dies is reported; the next check gets a fresh
fork in milliseconds. When the zygote ends, the kernel kills whatever is left in
its namespaces; the waiter ends with it, and the zygote with the grader.

Requests and answers are length-prefixed plain trees (:mod:`autograder.values`).
A probe request asks for a run of checks of one episode (the grader's selected
checks from the one it needs next); the child answers them one by one, each within
the per-check time limit from the previous answer, and a batch's request within
what is left of the submission's time (its ``budget``). The grader reads answers
ahead and matches them by submission and check, never by position alone; a request
a child times out or dies on is void from there, and the grader asks again.
The zygote relays a child's answer as opaque bytes after checking its size, and
tags every frame it sends: ``C`` for a child's answer (untrusted: the grader
checks and cleans it, :mod:`autograder.untrusted`), ``Z`` for its own reports
(ready, timed out, died). Student code prints into a per-episode log file of
capped size, never onto the protocol pipes; the grader, not the zygote, reads
a dead child's log. The zygote's memory is where every later child starts, the
next submission's too, so it keeps nothing of a submission: it zeroes each
answer once relayed and never reads what a child printed.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .untrusted import MAX_ANSWER_BYTES, checked_answer, clean_text, format_bytes

STARTUP_TIMEOUT = 120.0  # importing torch on a cold, busy machine
RELAY_MARGIN = 10.0  # extra seconds the parent gives the zygote to report a child's timeout
SETUP_FAILED = 117  # exit status of a child whose sandbox could not be applied
CHILD, ZYGOTE = b"C", b"Z"
OUT_OF_BUDGET = "not finished: the request's time limit ran out"  # the zygote's word for a request cut at its budget
_MADV_COLLAPSE = 25  # madvise(2): make huge pages of an existing range now
ENV_KEPT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "PYTHONPATH", "SYSTEMROOT")


class WorkerError(Exception):
    """The worker timed out or died; ``kind`` is ``"timeout"`` or ``"error"``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class Worker:
    """Parent-side handle on one worker (restarted on demand), which may serve many submissions.

    Each request names the scratch folder (:func:`autograder.submission.new_scratch`, made inside
    :attr:`root`) of the submission it is about; the zygote forks a fresh child for every
    episode of every submission.

    Args:
        config: What the worker needs: ``layers`` (sandbox layers to apply), ``memory``
            (bytes), ``protected`` (paths no child may read), ``allow_solutions``, ``episodes``
            (whose checks to load once).
    """

    def __init__(self, config: dict):
        self.root = Path(tempfile.mkdtemp(prefix="dsgrade-worker-"))  # the scratch folders live in here
        self.config = dict(config, root=str(self.root), parent=os.getpid())
        self.proc: subprocess.Popen | None = None
        self.sandbox: dict | None = None  # what the zygote applies, from its last "ready" report
        self._ready = False
        self._log = None
        self._owed: list[tuple[str, str]] = []  # (scratch, item) of the last probe request not answered yet
        self._answers: dict[tuple[str, str], dict | WorkerError] = {}  # its answers read ahead

    def start(self) -> None:
        """Starts the process without waiting for it (it imports torch meanwhile)."""
        if self.proc is not None:
            return
        self._log = tempfile.TemporaryFile()
        cmd = [sys.executable, "-m", "autograder.worker", json.dumps(self.config)]
        # Nothing of the grader's environment (tokens, DSGRADE_FIXTURES) reaches student code.
        env = {k: v for k, v in os.environ.items() if k in ENV_KEPT}
        package_parent = str(Path(__file__).resolve().parent.parent)  # so `-m autograder.worker` resolves
        env.update(PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", HOME=str(self.root),
                   PYTHONPATH=os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")])))
        # Own session: a Ctrl-C in the terminal reaches the grader, which then stops the worker.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     env=env, start_new_session=True, cwd=str(self.root))
        self._ready = False

    def wait_ready(self) -> dict:
        """Waits until the worker has started; returns what its sandbox applies (see :func:`main`)."""
        self.start()
        if not self._ready:
            tag, ready = self._receive(time.monotonic() + STARTUP_TIMEOUT, starting=True)
            if tag != ZYGOTE or ready.get("status") != "ready":
                self.stop()
                raise WorkerError("error", "the grader's worker did not start properly")
            self.sandbox, self._ready = ready["sandbox"], True
        return self.sandbox

    def request(self, message: dict, timeout: float, meanwhile=None) -> dict:
        """Sends one request and returns the answer, checked and cleaned.

        Args:
            message: The request.
            timeout: Seconds the worker has to answer, from the moment it was asked.
            meanwhile: Called after sending, while the worker works (the grader
                computes the reference then, on the other core).

        Returns:
            dict: ``{"status": "ok", "result": …}`` or ``{"status": …, "message": …}``; the
            zygote's reports of a sandbox failure carry ``"sandbox_failed": True``.

        Raises:
            WorkerError: On timeout (the worker is killed) or if the worker died.
        """
        self._send_request(message, timeout)
        sent = time.monotonic()
        if meanwhile is not None:
            meanwhile()
        return _delivered(self._answer_of(*self._receive(sent + timeout + RELAY_MARGIN)))

    def probe(self, message: dict, timeout: float, meanwhile=None) -> None:
        """Sends one request to run several checks of one episode (``message["items"]``, each with its
        ``item`` id), answered one by one (:meth:`answer`).

        The child runs them back to back, so a whole episode costs one request rather than one per check;
        the zygote still holds each check to ``timeout`` (from the previous answer) and, with
        ``message["budget"]``, the whole request to that many seconds. The first check that times out or
        kills the child ends the request: the checks after it are not answered (ask again, in a fresh child).
        """
        self._send_request(message, timeout)
        self._owed = [(message["scratch"], item["item"]) for item in message["items"]]
        if meanwhile is not None:
            meanwhile()

    def answer(self, scratch: str, item: str, timeout: float) -> dict | None:
        """The answer to ``item`` of the last :meth:`probe` request, checked and cleaned as :meth:`request`'s;
        None if that request did not ask for it or ended before it.

        Raises:
            WorkerError: As :meth:`request` does, for this check.
        """
        key = (scratch, item)
        while key not in self._answers and key in self._owed:
            self._read_owed(timeout)
        answer = self._answers.pop(key, None)
        return None if answer is None else _delivered(answer)

    def forget(self, timeout: float) -> None:
        """Reads what the last :meth:`probe` request still owes and drops every answer read ahead
        (a grader that stops early, e.g. past a submission's time limit, leaves the next one a clean pipe)."""
        while self._owed:
            self._read_owed(timeout)
        self._answers.clear()

    def _read_owed(self, timeout: float) -> None:
        """Reads the next answer the last probe request owes (the zygote sends them in order)."""
        key = self._owed.pop(0)
        try:
            self._answers[key] = self._answer_of(*self._receive(time.monotonic() + timeout + RELAY_MARGIN))
        except WorkerError as e:  # the worker was stopped: nothing more comes
            self._answers[key], self._owed = e, []
            return
        answer = self._answers[key]
        if isinstance(answer, WorkerError) or answer.get("zygote"):
            self._owed = []  # the child timed out or died on this check: the rest of the request is void

    def _send_request(self, message: dict, timeout: float) -> None:
        from .values import encode

        self.wait_ready()
        while self._owed:  # answers still on their way belong before this request's
            self._read_owed(timeout)
        try:
            _send(self.proc.stdin, encode(dict(message, timeout=timeout)))
        except (BrokenPipeError, OSError):
            raise self._died() from None

    def _answer_of(self, tag: bytes, answer) -> dict | WorkerError:
        """A frame as an answer: a child's, checked and cleaned; the zygote's report of a child that died,
        as an error (marked ``zygote``); its report of a timeout as a :class:`WorkerError`."""
        if tag == CHILD:
            return checked_answer(answer)
        if answer.get("status") == "timeout":  # the zygote killed the child at the deadline
            return WorkerError("timeout", clean_text(answer.get("message") or "timed out"))
        message = clean_text(answer.get("message", ""))
        printed = self._child_output(answer.get("log"))
        if printed:
            message += f"; its last output: {printed}"
        return {"status": "error", "message": message, "sandbox_failed": bool(answer.get("sandbox_failed")),
                "zygote": True}

    def _child_output(self, path, limit: int = 400) -> str:
        """The end of a dead child's log, which the zygote names: only a file in a ``logs`` folder of
        this worker's own folder is read (the path comes from the worker, so it is not trusted)."""
        if not isinstance(path, str):
            return ""
        log = Path(os.path.realpath(path))
        if log.parent.name != "logs" or self.root.resolve() not in log.parents:
            return ""
        try:
            fd = os.open(log, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return ""
        try:
            return _tail(fd, limit)
        except OSError:
            return ""
        finally:
            os.close(fd)

    def prepare(self, episode: str, scratch: Path, timeout: float) -> None:
        """Has the zygote fork the child for ``episode`` of the submission in ``scratch`` ahead of time
        (``dsgrade watch``, between rounds); a failure only means the next round forks it itself."""
        try:
            self._send_request({"op": "prepare", "episode": episode, "scratch": str(scratch)}, timeout)
            self._receive(time.monotonic() + RELAY_MARGIN)
        except (WorkerError, BrokenPipeError, OSError):
            pass

    def _receive(self, deadline: float, starting: bool = False) -> tuple[bytes, object]:
        from .values import decode

        fd = self.proc.stdout.fileno()
        (n,) = struct.unpack("<Q", self._read_exact(fd, 8, deadline, starting))
        if not 1 <= n <= MAX_ANSWER_BYTES + 4096:  # the zygote caps what it relays; this cannot happen
            self.stop()
            raise WorkerError("error", f"the worker sent a frame of {n} bytes; the grader stopped it")
        body = self._read_exact(fd, n, deadline, starting)
        tag = body[:1]
        try:
            return tag, decode(body[1:])
        except Exception as e:  # a corrupted answer is the target's fault, never the grader's
            if tag == CHILD:
                return tag, {"status": "error", "message": f"the grader could not read your result ({e})"}
            self.stop()
            raise WorkerError("error", f"the worker sent an unreadable report ({e})") from None

    def _read_exact(self, fd: int, n: int, deadline: float, starting: bool) -> bytes:
        chunks, got = [], 0
        while got < n:
            # An answer already waiting counts even if the deadline has just passed.
            left = max(0.0, deadline - time.monotonic())
            if not select.select([fd], [], [], left)[0]:
                self.stop()
                if starting:
                    raise WorkerError("error", "the grader's worker did not start in time")
                raise WorkerError("timeout", "timed out")
            chunk = os.read(fd, min(n - got, 1 << 20))
            if not chunk:
                raise self._died()
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _died(self) -> WorkerError:
        code = self.proc.wait() if self.proc else None
        tail = self._log_tail()
        self.stop()
        msg = f"the grader's worker died ({_how(code)})"
        if tail:
            msg += f"; its last output: {tail}"
        return WorkerError("error", msg)

    def _log_tail(self, limit: int = 400) -> str:
        return "" if self._log is None else _tail(self._log.fileno(), limit)

    def stop(self, grace: float = 0.0) -> None:
        """Stops the worker; the next request starts a new one.

        Args:
            grace: Seconds to let the zygote end its child itself after its input closes;
                then the whole process group is killed.
        """
        if self.proc is not None:
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
        if self._log is not None:
            self._log.close()
        self.proc, self._log, self._ready = None, None, False
        self._owed, self._answers = [], {}

    def close(self) -> None:
        """Stops the worker for good and removes its folder, with every scratch folder in it."""
        from .submission import remove_tree

        self.stop(grace=2.0)
        remove_tree(self.root)


def _tail(fd: int, limit: int) -> str:
    """The last ``limit`` bytes of an open file, as cleaned text."""
    size = os.fstat(fd).st_size
    return clean_text(os.pread(fd, limit, max(0, size - limit)).decode(errors="replace"), limit)


def _delivered(answer: dict | WorkerError) -> dict:
    """An answer as :meth:`Worker.request` returns it: a timeout or a dead worker raised, the zygote's mark
    (which only steers reading ahead) dropped."""
    if isinstance(answer, WorkerError):
        raise answer
    answer.pop("zygote", None)
    return answer


# --- the worker processes -----------------------------------------------------------------


def _how(code: int | None) -> str:
    """``exit code 3`` / ``signal 11`` from a returncode (negative = killed by a signal)."""
    if code is None:
        return "unknown"
    return f"exit code {code}" if code >= 0 else f"signal {-code}"


class _BlockSolutions:
    """Import hook that names the problem when code under test imports ``solutions``.

    A courtesy, not a defence: with the sandbox on, Landlock keeps ``solutions/`` unreadable.
    """

    def find_spec(self, name, path=None, target=None):
        if name == "solutions" or name.startswith("solutions."):
            raise ImportError("the solutions package is not available while your code is graded")
        return None


def _send(out, body: bytes, tag: bytes = b"") -> None:
    out.write(struct.pack("<Q", len(tag) + len(body)) + tag + body)
    out.flush()


def _receive_frame(inp) -> bytes | None:
    """One message body from a pipe, or None at end of file."""
    head = inp.read(8)
    if len(head) < 8:
        return None
    return inp.read(struct.unpack("<Q", head)[0])


class _Child:
    """The zygote's handle on one episode's child, which imports and runs the target's code.

    Args:
        episode: The episode it serves.
        scratch: The scratch folder of the submission (its ``src`` is imported).
        n: A serial number (for its writable folder and log).
        settings: The zygote's settings (see :func:`main`).
        parent_pipes: The zygote's pipes to the grader, closed in the child.
        cpu_seconds: CPU time the child may use in all.
    """

    def __init__(self, episode: str, scratch: Path, n: int, settings: dict, parent_pipes: tuple, cpu_seconds: int):
        from . import sandbox

        work = scratch / "work" / f"{episode}-{n}"
        work.mkdir(mode=0o700)
        self.log_path = scratch / "logs" / f"{episode}-{n}.log"
        self.log = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        policy = sandbox.Policy(settings["readable"] + [str(scratch / "src")], str(work),
                                settings["memory"], cpu_seconds)
        self.serves = (episode, str(scratch))
        self.cpu_seconds, self.memory = cpu_seconds, settings["memory"]
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns into the zygote's loop
            try:
                os.setpgid(0, 0)  # kill(0, …) in student code then reaches only this child
                sandbox.die_with_parent()
                for f in parent_pipes:
                    f.close()  # student code must not reach the grader's pipes
                os.close(to_child_w)
                os.close(from_child_r)
                devnull = os.open(os.devnull, os.O_RDWR)
                os.dup2(devnull, 0)
                os.dup2(self.log, 1)
                os.dup2(self.log, 2)
                os.chdir(work)
                os.environ.update(HOME=str(work), TMPDIR=str(work))
                sys.argv[1:] = []  # the zygote's settings are nobody's business
                sandbox.confine(policy, landlock="landlock" in settings["layers"],
                                seccomp="seccomp" in settings["layers"])
            except BaseException as e:  # noqa: BLE001 - never run student code half-confined
                os.write(2, f"{type(e).__name__}: {e}".encode(errors="replace"))
                os._exit(SETUP_FAILED)
            try:
                _serve(scratch / "src", os.fdopen(to_child_r, "rb"), os.fdopen(from_child_w, "wb"), self.memory)
            finally:
                os._exit(0)
        os.close(to_child_r)
        os.close(from_child_w)
        self.requests = os.fdopen(to_child_w, "wb")
        self.answers = from_child_r
        self.timed_out = self.out_of_budget = False
        self.deadline_from = time.monotonic()
        self.too_large = 0

    def send(self, body: bytes) -> bool:
        """Relays one request; False if the child is gone."""
        try:
            _send(self.requests, body)
        except (BrokenPipeError, OSError):
            return False
        self.deadline_from = time.monotonic()
        return True

    def relay(self, timeout: float, out, until: float | None = None) -> bool:
        """Forwards the child's next answer to the grader as a ``C`` frame; False if the child timed out
        (``timeout`` seconds from the previous answer, or past ``until``, the request's own deadline), died
        or answered with more than :data:`MAX_ANSWER_BYTES` (then :meth:`end` says which).

        The answer is read into one buffer, written from it and then zeroed. This process's memory
        is where every later child starts, the next submission's too: freed but not cleared, a
        classmate's results would be there for the reading.
        """
        deadline = self.deadline_from + timeout
        if until is not None and until < deadline:
            deadline, self.out_of_budget = until, True
        head = bytearray(8)
        if not self._read_into(head, deadline):
            return False
        (n,) = struct.unpack("<Q", head)
        if n > MAX_ANSWER_BYTES:  # refuse before reading: the zygote's memory is the grader's
            self.too_large = n
            return False
        body = bytearray(n)
        try:
            if not self._read_into(body, deadline):
                return False
            out.write(struct.pack("<Q", 1 + n) + CHILD)
            out.flush()
            view = memoryview(body)
            while view:  # straight from the buffer: a buffered writer would keep a copy
                view = view[os.write(out.fileno(), view):]
            self.deadline_from, self.out_of_budget = time.monotonic(), False  # the next check's time starts now
            return True
        finally:
            body[:] = bytes(n)

    def _read_into(self, buffer: bytearray, deadline: float) -> bool:
        view, got = memoryview(buffer), 0
        while got < len(buffer):
            if not select.select([self.answers], [], [], max(0.0, deadline - time.monotonic()))[0]:
                self.timed_out = True
                return False
            k = os.readv(self.answers, [view[got:]])
            if not k:
                return False
            got += k
        return True

    def end(self) -> dict:
        """Kills the child (if it still runs) and says how it ended, as the zygote's report.

        A report of a child that died names its log (``log``) rather than quoting it: the grader reads
        the end of it, so nothing the child printed passes through this process's memory.
        """
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status, _ = os.wait4(self.pid, 0)
        for close in (self.requests.close, lambda: os.close(self.answers)):
            try:
                close()
            except OSError:
                pass
        printed = os.fstat(self.log).st_size > 0
        os.close(self.log)
        code = os.waitstatus_to_exitcode(status)
        if self.timed_out:
            if self.out_of_budget:
                return {"status": "timeout", "message": OUT_OF_BUDGET}
            return {"status": "timeout", "message": "timed out"}
        if self.too_large:
            return {"status": "error", "message": f"your result is too large to grade: "
                                                  f"{format_bytes(self.too_large)} (the limit is "
                                                  f"{format_bytes(MAX_ANSWER_BYTES)})"}
        log = {"log": str(self.log_path)} if printed else {}
        if code == SETUP_FAILED:
            return {"status": "error", "sandbox_failed": True, "message": "the grader could not sandbox your code",
                    **log}
        if code == -signal.SIGXCPU:
            return {"status": "timeout", "message": f"the CPU-time limit of {self.cpu_seconds} s for the "
                                                    f"episode was exceeded (threads count too)"}
        msg = f"the process running your code died ({_how(code)})"
        if code == -signal.SIGKILL:
            msg += " — the machine may have run out of memory"
        return {"status": "error", "message": msg, **log}


def _memory_answer(e: BaseException, memory: int) -> dict | None:
    """The answer for an allocation that failed under the memory limit, or None for other errors."""
    text = str(e)
    if isinstance(e, MemoryError) or "can't allocate memory" in text or "Cannot allocate memory" in text:
        return {"status": "error", "message": f"memory limit of {format_bytes(memory)} exceeded "
                                              f"({type(e).__name__}: {text.splitlines()[0] if text else ''})"}
    return None


def _serve(src: Path, inp, out, memory: int) -> None:
    """The child's loop: import the target's modules and run probes on them."""
    from . import targets
    from .dependencies import Recorder
    from .values import decode, encode

    targets.load_package(src)
    recorder = Recorder()
    calls: dict[str, list] = {}  # item -> what it called, for the checks of the last probe request
    while (body := _receive_frame(inp)) is not None:
        req = decode(body)
        if req["op"] == "calls":  # what a check called (see autograder.dependencies), asked for if it failed
            _send(out, encode({"status": "ok", "calls": calls.get(req.get("item"), [])}))
            continue
        calls.clear()
        for item in req["items"] if req["op"] == "probe" else [{"exercise": req.get("exercise")}]:
            answer = _answer(src, req, item, recorder, memory)
            if recorder.calls:
                calls[item.get("item")] = recorder.calls
            try:
                reply = encode(answer)
            except Exception as e:  # e.g. a result that cannot be serialised
                reply = encode({"status": "error", "message": f"the result could not be sent: {e}"})
            _send(out, reply)


def _answer(src: Path, req: dict, item: dict, recorder, memory: int) -> dict:
    """The child's answer to an import request or to one check (``item``) of a probe request."""
    from . import registry, targets
    from .grading import exception_answer
    from .probing import run_probe

    exercise_id = item.get("exercise")
    module = None
    recorder.begin(exercise_id)
    try:
        module = targets.import_episode(src, req["module"])
        recorder.install(targets.PACKAGE)
        if req["op"] == "import":
            return {"status": "ok"}
        check, c = registry.find_check(req["episode"], item["item"])
        answer = {"status": "ok", "result": run_probe(check, c, module, item["seed"], item.get("given"))}
    except targets.TargetError as e:
        answer = {"status": "error", "message": str(e)}
    except BaseException as e:  # noqa: BLE001 - student code may raise anything, SystemExit included
        answer = _memory_answer(e, memory) or exception_answer(e, exercise_id, src)
    if module is not None and req["op"] == "probe":
        try:
            answer.update(recorder.report(module, exercise_id.split(".", 1)[1]))
        except Exception:  # noqa: BLE001 - blame is a courtesy; the answer stands without it
            pass
    return answer


def main(argv: list[str]) -> None:
    """The waiter, then the zygote: namespaces first, then imports, then a child per episode.

    ``argv[0]`` is the JSON settings of :class:`Worker`. The zygote's first frame is
    ``{"status": "ready", "sandbox": {"applied": [...], "missing": {layer: why}}}``.
    """
    from . import sandbox

    settings = json.loads(argv[0])
    sandbox.die_with_parent()
    if os.getppid() != settings["parent"]:
        os._exit(3)  # the grader is already gone
    missing = {}
    layers = list(settings["layers"])
    if "namespaces" in layers:
        problem = sandbox.unshare_namespaces()
        if problem is None:
            _become_zygote_in_a_child()
        else:
            missing["namespaces"] = problem
            layers.remove("namespaces")
    # Keep the protocol pipes on private fds; the zygote's own output goes to the grader's log.
    inp = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the grader's to handle
    if not settings.get("allow_solutions"):
        sys.meta_path.insert(0, _BlockSolutions())
    found = sandbox.support(try_namespaces=False)
    for layer in ("landlock", "seccomp"):
        if layer in layers and found[layer]:
            missing[layer] = found[layer]
            layers.remove(layer)

    import torch

    from . import dependencies, grading, probing, registry, targets  # noqa: F401  (loaded once, shared by every fork)
    from .values import decode, encode

    torch.set_num_threads(1)  # before any fork: no thread pool to inherit
    torch.ones(2).sum()  # torch reads /proc/cpuinfo on first use: do it here, not in a confined child
    for episode_id in settings.get("episodes", []):
        registry.load_episode(episode_id)  # once here rather than in every child
    gc.freeze()  # the children's garbage collector then leaves the zygote's objects (and their pages) alone
    protected = [Path(p) for p in settings["protected"]] + [Path(settings["root"])]
    settings.update(layers=layers, readable=sandbox.readable_paths([Path(__file__).resolve().parent], protected))
    sandbox.prepare(sandbox.Policy(settings["readable"], settings["root"]), landlock="landlock" in layers,
                    seccomp="seccomp" in layers)
    _collapse_into_huge_pages()
    _send(out, encode({"status": "ready", "sandbox": {"applied": layers, "missing": missing,
                                                      "landlock_abi": sandbox.landlock_abi()}}), ZYGOTE)

    child = spare = None  # the spare: the next episode's child, forked while this episode's one works
    n = 0
    while (body := _receive_frame(inp)) is not None:
        req = decode(body)
        wanted = (req["episode"], req["scratch"])
        if req["op"] == "prepare":  # `dsgrade watch` between rounds: fork the next round's first child now
            for old in (child, spare):
                if old is not None and old.serves != wanted:
                    old.end()
            child = None
            if spare is None or spare.serves != wanted:
                n += 1
                spare = _Child(req["episode"], Path(req["scratch"]), n, settings, (inp, out),
                               _cpu_budget(req["episode"], req["timeout"]))
            _send(out, encode({"status": "ready"}), ZYGOTE)
            continue
        if child is not None and child.serves != wanted:
            child.end()  # a fresh child per episode: one episode cannot sabotage the next
            child = None
        if child is None and spare is not None and spare.serves == wanted:
            child, spare = spare, None
        if child is None:
            n += 1
            child = _Child(req["episode"], Path(req["scratch"]), n, settings, (inp, out),
                           _cpu_budget(req["episode"], req["timeout"]))
        sent = child.send(body)
        following = _following(settings.get("episodes", []), req["episode"])
        if sent and following and (spare is None or spare.serves != (following, req["scratch"])):
            if spare is not None:
                spare.end()
            n += 1
            spare = _Child(following, Path(req["scratch"]), n, settings, (inp, out),
                           _cpu_budget(following, req["timeout"]))
        # One answer per check asked for (a probe request may ask for a whole episode), each within the
        # check's time limit from the previous answer, all within the request's budget if it has one.
        until = time.monotonic() + float(req["budget"]) if req.get("budget") else None
        for _ in range(len(req["items"]) if req["op"] == "probe" else 1):
            if not (sent and child.relay(float(req["timeout"]), out, until)):  # timed out, died or too large:
                _send(out, encode(child.end()), ZYGOTE)  # report how; the next request forks afresh
                child = None
                break
    for c in (child, spare):
        if c is not None:
            c.end()
    os._exit(0)  # nothing to clean up; tearing down torch would only keep the grader waiting


def _collapse_into_huge_pages() -> None:
    """Moves the zygote's private memory (about 150 MB once torch is loaded) onto 2 MiB pages.

    fork() copies one page-table entry per page and the child's exit drops them all again: forking
    and ending a child that does nothing took 15–25 ms on 4 KiB pages, 7 ms on huge pages. Copy-on-write
    stays per 4 KiB page (the kernel splits a shared huge page when it is written), so a child's
    memory does not grow. Collapsing takes about 80 ms, once per worker, so it pays for itself from
    the eighth child on (a whole-course run, a batch, ``dsgrade watch``); a one-episode run loses
    those 80 ms at most. ``MADV_COLLAPSE`` (Linux ≥ 6.1) works whatever the THP setting.
    """
    import ctypes

    if sys.platform != "linux":
        return
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    huge = 2 << 20
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if fields[1].startswith("rw") and fields[1][3] == "p" and (len(fields) == 5 or fields[5] == "[heap]"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                start = -(-start // huge) * huge
                end -= end % huge
                if end > start:  # a range that cannot be collapsed (or a kernel without it) stays as it is
                    madvise(start, end - start, _MADV_COLLAPSE)


def _cpu_budget(episode_id: str, timeout: float) -> int:
    """CPU seconds a child may use for its whole episode: every check's time limit, and some to spare."""
    from . import registry

    cases = sum(len(chk.cases) for ex in registry.load_episode(episode_id).exercises for chk in ex.checks)
    return int(timeout * (cases + 1) + 10)


def _following(order: list[str], episode_id: str) -> str | None:
    """The episode graded after ``episode_id`` (None for the last, or one not in the order)."""
    if episode_id in order and order.index(episode_id) + 1 < len(order):
        return order[order.index(episode_id) + 1]
    return None


def _become_zygote_in_a_child() -> None:
    """Forks the zygote, pid 1 of the namespaces just entered; this process (the waiter) waits for it.

    Returns only in the zygote.
    """
    from . import sandbox

    pid = os.fork()
    if pid == 0:
        sandbox.die_with_parent()
        return
    for fd in (0, 1):
        os.close(fd)  # only the zygote holds the grader's pipes, so the grader sees it end
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _, status = os.waitpid(pid, 0)
    os._exit(min(max(os.waitstatus_to_exitcode(status), 0), 255))


if __name__ == "__main__":
    main(sys.argv[1:])
