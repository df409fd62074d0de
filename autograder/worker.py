"""The worker: the only processes that import and run the target's code.

The grader (parent) starts ``python -m autograder.worker TARGET_DIR`` and talks
to it over a pair of pipes: requests and answers are length-prefixed plain trees
(:mod:`autograder.values`), so nothing the student's code builds can reach the
parent as a live object.

That process is a *zygote*: it imports torch and the grader's own modules once,
never the target's code, and forks a *child* that imports the target and runs
the checks, relaying requests and answers. The child is kept between checks;
when a check runs past its time limit the zygote kills the child, and when the
child dies (``os._exit``, a segfault) it reports how, and either way the next
check gets a fresh fork in milliseconds instead of a new Python importing torch.
If the zygote itself stops answering, the parent kills the whole process group
and starts again.

Student code may print: the worker moves its protocol pipes off fds 0/1 and
points stdout at stderr and stdin at /dev/null before anything else runs.
"""

from __future__ import annotations

import os
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

STARTUP_TIMEOUT = 120.0  # importing torch on a cold, busy machine
RELAY_MARGIN = 10.0  # extra seconds the parent gives the zygote to report a child's timeout


class WorkerError(Exception):
    """The worker timed out or died; ``kind`` is ``"timeout"`` or ``"error"``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class Worker:
    """Parent-side handle on one worker process (restarted on demand).

    Args:
        target_dir: Folder of the target's episode modules.
        allow_solutions: Whether code in the worker may import the ``solutions`` package.
    """

    def __init__(self, target_dir: Path, allow_solutions: bool = False):
        self.target_dir = Path(target_dir)
        self.allow_solutions = allow_solutions
        self.proc: subprocess.Popen | None = None
        self._ready = False
        self._log = None

    def start(self) -> None:
        """Starts the process without waiting for it (it imports torch meanwhile)."""
        if self.proc is not None:
            return
        self._log = tempfile.TemporaryFile()
        cmd = [sys.executable, "-m", "autograder.worker", str(self.target_dir)]
        if self.allow_solutions:
            cmd.append("--allow-solutions")
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        # Own session: a Ctrl-C in the terminal reaches the grader, which then stops the worker.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, env=env, start_new_session=True,
                                     cwd=str(Path(__file__).resolve().parent.parent))
        self._ready = False

    def request(self, message: dict, timeout: float, meanwhile=None) -> dict:
        """Sends one request and returns the decoded answer.

        Args:
            message: The request.
            timeout: Seconds the worker has to answer, from the moment it was asked.
            meanwhile: Called after sending, while the worker works (the grader
                computes the reference then, on the other core).

        Raises:
            WorkerError: On timeout (the worker is killed) or if the worker died.
        """
        self.start()
        if not self._ready:
            self._receive(time.monotonic() + STARTUP_TIMEOUT, starting=True)
            self._ready = True
        from .values import encode

        try:
            _send(self.proc.stdin, encode(dict(message, timeout=timeout)))
        except (BrokenPipeError, OSError):
            raise self._died() from None
        sent = time.monotonic()
        if meanwhile is not None:
            meanwhile()
        answer = self._receive(sent + timeout + RELAY_MARGIN)
        if answer.get("status") == "timeout":  # the zygote killed the child at the deadline
            raise WorkerError("timeout", "timed out")
        if answer.get("died"):
            tail = self._log_tail()
            raise WorkerError("error", answer["message"] + (f"; its last output: {tail}" if tail else ""))
        return answer

    def _receive(self, deadline: float, starting: bool = False) -> dict:
        from .values import decode

        fd = self.proc.stdout.fileno()
        head = self._read_exact(fd, 8, deadline, starting)
        (n,) = struct.unpack("<Q", head)
        body = self._read_exact(fd, n, deadline, starting)
        try:
            return decode(body)
        except Exception as e:  # a corrupted answer is the target's fault, never the grader's
            self.stop()
            raise WorkerError("error", f"the worker sent an unreadable answer ({e})") from None

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
        msg = f"the process running your code died ({_how(code)})"
        if tail:
            msg += f"; its last output: {tail}"
        return WorkerError("error", msg)

    def _log_tail(self, limit: int = 400) -> str:
        if self._log is None:
            return ""
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(0, size - limit))
        return " ".join(self._log.read().decode(errors="replace").split())

    def stop(self, grace: float = 0.0) -> None:
        """Stops the worker; the next request starts a new one.

        Args:
            grace: Seconds to let the zygote end its child itself after its input
                closes (the child has its own process group); then it is killed.
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
                os.killpg(self.proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
        if self._log is not None:
            self._log.close()
        self.proc, self._log, self._ready = None, None, False


# --- the worker processes -----------------------------------------------------------------


def _how(code: int | None) -> str:
    """``exit code 3`` / ``signal 11`` from a returncode (negative = killed by a signal)."""
    if code is None:
        return "unknown"
    return f"exit code {code}" if code >= 0 else f"signal {-code}"


class _BlockSolutions:
    """Import hook making ``solutions`` unimportable for code under test."""

    def find_spec(self, name, path=None, target=None):
        if name == "solutions" or name.startswith("solutions."):
            raise ImportError("the solutions package is not available while your code is graded")
        return None


def _watch_parent(parent: int) -> None:
    # If the process that reads our answers is gone, stop, even mid-loop.
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(3)


def _send(out, body: bytes) -> None:
    out.write(struct.pack("<Q", len(body)) + body)
    out.flush()


def _receive_frame(inp) -> bytes | None:
    """One message body from a pipe, or None at end of file."""
    head = inp.read(8)
    if len(head) < 8:
        return None
    return inp.read(struct.unpack("<Q", head)[0])


class _Child:
    """The zygote's handle on its forked child, which imports and runs the target's code."""

    def __init__(self, target_dir: Path, parent_pipes: tuple):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns into the zygote's loop
            try:
                os.setpgid(0, 0)  # its own group, so whatever it starts dies with it
                for f in parent_pipes:
                    f.close()  # student code must not reach the grader's pipes
                os.close(to_child_w)
                os.close(from_child_r)
                _serve(target_dir, os.fdopen(to_child_r, "rb"), os.fdopen(from_child_w, "wb"))
            finally:
                os._exit(0)
        try:
            os.setpgid(self.pid, self.pid)  # also here: the child may not have run yet when we kill it
        except OSError:
            pass
        os.close(to_child_r)
        os.close(from_child_w)
        self.requests = os.fdopen(to_child_w, "wb")
        self.answers = from_child_r
        self.timed_out = False

    def ask(self, body: bytes, timeout: float) -> bytes | None:
        """Relays one request; returns the answer's bytes, or None if the child timed out or died."""
        try:
            _send(self.requests, body)
        except (BrokenPipeError, OSError):
            return None
        deadline = time.monotonic() + timeout
        head = self._read(8, deadline)
        if head is None:
            return None
        return self._read(struct.unpack("<Q", head)[0], deadline)

    def _read(self, n: int, deadline: float) -> bytes | None:
        chunks, got = [], 0
        while got < n:
            if not select.select([self.answers], [], [], max(0.0, deadline - time.monotonic()))[0]:
                self.timed_out = True
                return None
            chunk = os.read(self.answers, min(n - got, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def end(self) -> dict:
        """Kills the child (if it still runs) and says how it ended, as an answer."""
        for kill in (os.killpg, os.kill):
            try:
                kill(self.pid, 9)
                break
            except (ProcessLookupError, PermissionError):
                pass
        _, status = os.waitpid(self.pid, 0)
        try:
            self.requests.close()
        except OSError:
            pass
        os.close(self.answers)
        if self.timed_out:
            return {"status": "timeout", "message": "timed out"}
        code = os.waitstatus_to_exitcode(status)
        return {"status": "error", "died": True, "message": f"the process running your code died ({_how(code)})"}


def _serve(target_dir: Path, inp, out) -> None:
    """The child's loop: import the target's modules and run probes on them."""
    from . import registry, targets
    from .grading import exception_answer
    from .probing import run_probe
    from .values import decode, encode

    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    targets.load_package(target_dir)
    while (body := _receive_frame(inp)) is not None:
        req = decode(body)
        exercise_id = req.get("exercise")
        try:
            module = targets.import_episode(target_dir, req["module"])
            if req["op"] == "import":
                answer = {"status": "ok"}
            else:
                check, c = registry.find_check(req["episode"], req["item"])
                answer = {"status": "ok", "result": run_probe(check, c, module, req["seed"], req.get("given"))}
        except targets.TargetError as e:
            answer = {"status": "error", "message": str(e)}
        except BaseException as e:  # noqa: BLE001 - student code may raise anything, SystemExit included
            answer = exception_answer(e, exercise_id, target_dir)
        try:
            reply = encode(answer)
        except Exception as e:  # e.g. a result that cannot be serialised
            reply = encode({"status": "error", "message": f"the result could not be sent: {e}"})
        _send(out, reply)


def main(argv: list[str]) -> None:
    """The zygote: imports what every check needs, then relays requests to a forked child."""
    target_dir = Path(argv[0]).resolve()
    allow_solutions = "--allow-solutions" in argv
    # Keep the protocol pipes on private fds; student prints go to stderr.
    inp = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    if not allow_solutions:
        sys.meta_path.insert(0, _BlockSolutions())
        for name in [m for m in sys.modules if m == "solutions" or m.startswith("solutions.")]:
            del sys.modules[name]

    import torch

    from . import grading, probing, registry, targets  # noqa: F401  (loaded once, shared by every fork)
    from .values import decode, encode

    torch.set_num_threads(1)  # before any fork: no thread pool to inherit
    _send(out, encode({"status": "ready"}))

    child = None
    while (body := _receive_frame(inp)) is not None:
        if child is None:
            child = _Child(target_dir, (inp, out))
        answer = child.ask(body, float(decode(body)["timeout"]))
        if answer is None:  # timed out or died: report how; the next request forks afresh
            answer = encode(child.end())
            child = None
        _send(out, answer)
    if child is not None:
        child.end()
    os._exit(0)  # nothing to clean up; tearing down torch would only keep the grader waiting


if __name__ == "__main__":
    main(sys.argv[1:])
