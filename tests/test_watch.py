"""``dsgrade watch``, driven as a student would: save, read the report, save again, Ctrl-C."""

from __future__ import annotations

import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, SOLUTIONS, _env
from test_sandbox import _processes_of

READY = "for changes (Ctrl-C to stop)"


class Watch:
    """A running ``dsgrade watch`` whose output is read a round at a time."""

    def __init__(self, *args: str):
        env = dict(_env(), COLUMNS="200")
        self.proc = subprocess.Popen([sys.executable, "-m", "autograder", "watch", *args], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stdout], daemon=True).start()

    def round(self, timeout: float = 120) -> str:
        """The output up to the next "watching … for changes" line."""
        out, deadline = [], time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            out.append(line)
            if READY in line:
                return "".join(out)

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=30)
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        return code, "".join(rest)


@pytest.fixture
def folder(tmp_path) -> Path:
    target = tmp_path / "mine"
    shutil.copytree(ROOT / "exercises", target, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    return target


def _save(path: Path, text: str) -> None:
    time.sleep(0.3)  # a real save comes after the previous round's report
    path.write_text(text)


def test_every_save_is_graded_afresh_and_ctrl_c_leaves_nothing(folder):
    basics = folder / "ep04_attention_basics.py"
    good = (SOLUTIONS / "ep04_attention_basics.py").read_text()
    watch = Watch("ep04", "--target", str(folder), "--timeout", "1")
    try:
        assert "not implemented" in watch.round()  # the stubs, graded at once
        _save(basics, good.replace("return x @ x.transpose(-2, -1)", "return x @ x.transpose(-2, -1) * 2"))
        wrong = watch.round()
        assert "✗ ep04.attention_scores" in wrong and "× 2 everywhere" in wrong
        _save(basics, good + "\n\ndef context_vectors(x):\n    while True:\n        pass\n")
        hung = watch.round()
        assert "timed out after 1 s" in hung and "✓ passed" not in hung
        _save(basics, good)
        assert "16/16" in watch.round(), "the hang cost its round only, and the last save is what is graded"
    finally:
        code, rest = watch.stop()
    assert code == 0 and "stopped watching" in rest
    assert _processes_of(watch.proc.pid) == []


def test_a_save_grades_its_episode_and_those_that_import_it(folder):
    watch = Watch("--target", str(folder))
    try:
        assert READY in watch.round()
        _save(folder / "ep05_self_attention.py", (SOLUTIONS / "ep05_self_attention.py").read_text())
        graded = watch.round()
    finally:
        watch.stop()
    rows = set(re.findall(r"^(ep\d\d|capstone)\s+│", graded, re.M))
    assert {"ep05", "ep06", "ep09", "capstone"} <= rows  # ep06, ep09 import ep05; the capstone ep06
    assert not rows & {"ep04", "ep16", "ep20"}
