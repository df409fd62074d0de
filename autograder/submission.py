"""The private copy of a submission: the only time the grader opens a student's files.

Before anything runs, the grader copies the target's Python modules into a fresh
scratch folder and grades that copy, never the original. Only regular files with
module names are copied, each opened once through a descriptor that neither
follows a symbolic link nor blocks on a FIFO, and sizes are capped per file and
in total. The bytes are kept in memory, so the report (the line of a stub) never
reads a student's file again. Modules the target lacks (``config.py``, an
episode not handed in) are filled in from ``exercises/`` so that imports between
episodes still work; the episode's own checks then say the file is missing.

The scratch folder holds ``src/`` (the copy, read-only for student code),
``work/`` (one writable folder per episode) and ``logs/`` (what the code printed).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .untrusted import clean_text, format_bytes

MAX_FILE_BYTES = 1 << 20
MAX_TOTAL_BYTES = 16 << 20
MAX_ENTRIES = 2000  # directory entries looked at; a folder of a million files must not stall grading
MODULE_FILE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.py")


@dataclass
class Submission:
    """A submission as copied into the scratch folder.

    Attributes:
        source: The folder the files were read from (for messages only).
        folder: The private copy that is graded.
        files: Module file name → bytes, for every file copied from ``source``.
        refused: File name → why it was not copied (a symbolic link, too large …).
        filled: Module files copied from ``exercises/`` because ``source`` lacks them.
        label: What messages call ``source`` when its path means nothing to the student (a batch's
            staging folder): ``"alice's submission"``.
    """

    source: Path
    folder: Path
    files: dict[str, bytes] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    filled: list[str] = field(default_factory=list)
    label: str = ""

    def lines(self, module: str) -> list[str]:
        """The lines of ``module``.py as handed in (empty if it was not)."""
        return self.files.get(f"{module}.py", b"").decode("utf-8", errors="replace").splitlines()

    def problem(self, module: str) -> str | None:
        """Why the checks of episode module ``module`` cannot run on this submission, or None."""
        name = f"{module}.py"
        if name in self.refused:
            return f"{name} was not graded: it is {self.refused[name]}"
        if name not in self.files:
            return f"{name} is not in {self.label or self.source}"
        return None


class _Refused(Exception):
    """A file that is not copied; the message says what it is."""


def new_scratch(parent: Path | None = None) -> Path:
    """A fresh scratch folder (mode 0700) with its ``src``, ``work`` and ``logs`` folders.

    Args:
        parent: The folder to make it in (a worker's own folder), else the system's temporary folder.
    """
    root = Path(tempfile.mkdtemp(prefix="dsgrade-", dir=parent))
    for name in ("src", "work", "logs"):
        (root / name).mkdir()
    return root


def remove_tree(path: Path) -> None:
    """Removes a scratch folder whatever student code left in it (read-only folders, FIFOs, links)."""
    def make_writable_and_retry(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)


def copy_submission(source: Path, folder: Path, fill_from: Path | None = None) -> Submission:
    """Copies the Python modules of ``source`` into ``folder`` (which must exist and be empty).

    Args:
        source: The target folder.
        folder: Where the copy goes (``scratch/src``).
        fill_from: Where modules ``source`` lacks come from (``exercises/``), or None.

    Returns:
        Submission: What was copied, refused and filled in.
    """
    sub = Submission(Path(source), Path(folder))
    total = 0
    dir_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with os.scandir(dir_fd) as it:
            entries = sorted(itertools.islice(it, MAX_ENTRIES + 1), key=lambda e: e.name)  # same order every run
        if len(entries) > MAX_ENTRIES:
            sub.refused["…"] = f"more than {MAX_ENTRIES} entries in the folder; only the first were looked at"
        for entry in entries[:MAX_ENTRIES]:
            name = entry.name
            if not name.endswith(".py"):
                continue  # notes, notebooks, __pycache__: not part of the submission
            shown = clean_text(name, 120)
            if not MODULE_FILE.fullmatch(name):
                sub.refused[shown] = "not a valid Python module name"
                continue
            try:
                data = _read_regular(dir_fd, name, entry, MAX_TOTAL_BYTES - total)
            except _Refused as e:
                sub.refused[shown] = str(e)
                continue
            total += len(data)
            sub.files[name] = data
    finally:
        os.close(dir_fd)
    for name in sorted(sub.files):
        (sub.folder / name).write_bytes(sub.files[name])
    if fill_from is not None:
        for path in sorted(Path(fill_from).glob("*.py")):
            if path.name not in sub.files:
                shutil.copyfile(path, sub.folder / path.name)
                sub.filled.append(path.name)
    return sub


def _read_regular(dir_fd: int, name: str, entry: os.DirEntry, budget: int) -> bytes:
    """The bytes of a regular file, read through one descriptor; refuses anything else."""
    if entry.is_symlink():
        raise _Refused("a symbolic link; hand in the file itself")
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as e:
        raise _Refused(f"not readable ({e.strerror})") from None
    try:
        st = os.fstat(fd)  # of what was opened, not of what the name pointed at a moment before
        if not stat.S_ISREG(st.st_mode):
            raise _Refused(_kind(st.st_mode))
        if st.st_size > MAX_FILE_BYTES:
            raise _Refused(f"{format_bytes(st.st_size)}, over the limit of {format_bytes(MAX_FILE_BYTES)} per file")
        if st.st_size > budget:
            raise _Refused(f"{format_bytes(st.st_size)}, which takes the submission over "
                           f"{format_bytes(MAX_TOTAL_BYTES)} in all")
        limit = min(MAX_FILE_BYTES, budget)
        chunks, size = [], 0
        while size <= limit:  # the size may have changed since fstat: never read more than the limit
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise _Refused(f"over the limit of {format_bytes(limit)} (it grew while being read)")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO), not a regular file"
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    return "not a regular file"
