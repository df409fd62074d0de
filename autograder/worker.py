"""The worker: the only process that imports and runs the target's code.

The grader (parent) starts ``python -m autograder.worker TARGET_DIR`` and talks
to it over a pair of pipes: requests and answers are length-prefixed plain trees
(:mod:`autograder.values`), so nothing the student's code builds can reach the
parent as a live object. The worker keeps the target
imported between checks; when a check times out or the worker dies (``os._exit``,
a segfault), the parent kills it and starts a fresh one for the next check.

Student code may print: the worker moves its own protocol pipes off fds 0/1 and
points stdout at stderr and stdin at /dev/null before importing anything.
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
            _send(self.proc.stdin, encode(message))
        except (BrokenPipeError, OSError):
            raise self._died() from None
        sent = time.monotonic()
        if meanwhile is not None:
            meanwhile()
        return self._receive(sent + timeout)

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
        how = f"exit code {code}" if code is not None and code >= 0 else f"signal {-code}" if code else "unknown"
        msg = f"the process running your code died ({how})"
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

    def stop(self) -> None:
        """Kills the worker (and anything it started); the next request starts a new one."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
        if self._log is not None:
            self._log.close()
        self.proc, self._log, self._ready = None, None, False


# --- the worker process -----------------------------------------------------------------


class _BlockSolutions:
    """Import hook making ``solutions`` unimportable for code under test."""

    def find_spec(self, name, path=None, target=None):
        if name == "solutions" or name.startswith("solutions."):
            raise ImportError("the solutions package is not available while your code is graded")
        return None


def _watch_parent(parent: int) -> None:
    # If the grader is gone, nobody will read our answers: stop, even mid-loop.
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(3)


def _send(out, body: bytes) -> None:
    out.write(struct.pack("<Q", len(body)) + body)
    out.flush()


def main(argv: list[str]) -> None:
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

    from . import registry, targets
    from .grading import exception_answer
    from .probing import run_probe
    from .values import encode

    torch.set_num_threads(1)
    targets.load_package(target_dir)
    _send(out, encode({"status": "ready"}))

    from .values import decode

    while True:
        head = inp.read(8)
        if len(head) < 8:
            return
        req = decode(inp.read(struct.unpack("<Q", head)[0]))
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
            body = encode(answer)
        except Exception as e:  # e.g. a result that cannot be serialised
            body = encode({"status": "error", "message": f"the result could not be sent: {e}"})
        _send(out, body)


if __name__ == "__main__":
    main(sys.argv[1:])
