"""The zygote's memory on huge pages: cheaper forks, and copy-on-write as correct as before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, _env

from autograder import sandbox
from autograder.plugin import worker_config
from autograder.worker import Worker


def _collapse_supported() -> bool:
    """MADV_COLLAPSE needs Linux >= 6.1 and transparent huge pages not switched off."""
    release = tuple(int(x) for x in os.uname().release.split(".")[:2] if x.isdigit())
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return sys.platform == "linux" and release >= (6, 1) and thp.exists() and "[never]" not in thp.read_text()


def _anon_huge_bytes(pid: int | str) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1]) * 1024
    return 0


COPY_ON_WRITE = r"""
import hashlib, json, os
from autograder.worker import _collapse_into_huge_pages

def huge_kib():
    return int(next(l for l in open("/proc/self/smaps_rollup") if l.startswith("AnonHugePages")).split()[1])

data = bytearray(b"zygote" * ((48 << 20) // 6))  # 48 MiB written: private anonymous pages
before = hashlib.sha256(data).hexdigest()
huge_before = huge_kib()
_collapse_into_huge_pages()
huge_after = huge_kib()
r, w = os.pipe()
if os.fork() == 0:  # the child writes one byte in the middle of a huge page: only its copy changes
    data[(20 << 20) + 7] = 0
    os.write(w, hashlib.sha256(data).hexdigest().encode())
    os._exit(0)
os.wait()
child = os.read(r, 100).decode()
print(json.dumps({"unchanged": hashlib.sha256(data).hexdigest() == before, "child_differs": child != before,
                  "huge_before": huge_before, "huge_after": huge_after}))
"""


def test_collapsing_keeps_memory_and_copy_on_write_exact():
    done = subprocess.run([sys.executable, "-c", COPY_ON_WRITE], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["unchanged"] and out["child_differs"]
    if _collapse_supported():
        assert out["huge_after"] >= out["huge_before"] + 32 * 1024, out  # KiB: most of the 48 MiB


def _zygote_pid(worker: Worker) -> int:
    """The pid of a started worker's zygote: the waiter's only child (the waiter itself without namespaces)."""
    worker.wait_ready()
    waiter = worker.proc.pid
    if "namespaces" not in worker.sandbox["applied"]:
        return waiter
    deadline = time.monotonic() + 10
    while not (children := Path(f"/proc/{waiter}/task/{waiter}/children").read_text().split()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return int(children[0])


def test_the_zygote_serves_from_huge_pages():
    worker = Worker(worker_config("auto", sandbox.DEFAULT_MEMORY, [], ["ep01"]))
    try:
        zygote = _zygote_pid(worker)
        if _collapse_supported():
            assert _anon_huge_bytes(zygote) >= 64 << 20  # torch's ~150 MB, most of it collapsed
    finally:
        worker.close()


SECRETS = '''
import os

from .config import DeepSeekConfig, deepseek_v2, deepseek_v3, tiny  # noqa: F401


def count_parameters(model):
    raise ValueError("{answered}")


def moe_parameter_counts(*args, **kwargs):
    print("{printed}", flush=True)
    os._exit(3)


def kv_cache_bytes(*args, **kwargs):
    raise NotImplementedError("ep01.kv_cache_bytes")
'''


def _private_memory_holds(pid: int, needles: list[bytes]) -> list[bytes]:
    """The needles found in the writable private memory of process ``pid`` (read through /proc)."""
    found = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("rw") or fields[1][3] != "p":
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            for at in range(start, end, 16 << 20):
                try:
                    chunk = os.pread(mem.fileno(), min(16 << 20, end - at) + 64, at)
                except OSError:
                    continue
                found.update(n for n in needles if n in chunk)
    return sorted(found)


def test_the_zygote_keeps_nothing_a_submission_answered_or_printed(tmp_path):
    """Every later child starts from the zygote's memory, the next student's too: what one student's
    code returned or printed must not be left in it, or a classmate's child could read it there."""
    from autograder.plugin import Grader
    from autograder.reference import LiveReference
    from autograder.registry import load_episode

    answered, printed = f"answer-{os.urandom(8).hex()}", f"printed-{os.urandom(8).hex()}"
    sub = tmp_path / "student"
    sub.mkdir()
    (sub / "ep01_introduction.py").write_text(SECRETS.format(answered=answered, printed=printed))
    worker = Worker(worker_config("auto", sandbox.DEFAULT_MEMORY, [], ["ep01"]))
    grader = Grader("student", sub, 1234, 5.0, LiveReference(), worker=worker)
    try:
        records = [grader.grade(chk, c) for ex in load_episode("ep01").exercises for chk in ex.checks
                   for c in chk.cases]
        messages = "\n".join(r.message for r in records)
        assert answered in messages  # the answer passed through the zygote…
        assert f"its last output: {printed}" in messages  # …and the grader read the log itself
        assert _private_memory_holds(_zygote_pid(worker), [answered.encode(), printed.encode()]) == []
    finally:
        grader.close()
        worker.close()


def test_the_grader_reads_only_a_childs_log_whatever_the_worker_names(tmp_path):
    """The zygote names a dead child's log and the grader reads its end; a worker that names anything
    else (the reference, a link to it, a path climbing out) gets nothing read."""
    secret = ROOT / "solutions" / "ep05_self_attention.py"
    worker = Worker(worker_config("auto", sandbox.DEFAULT_MEMORY, [], []))
    try:
        logs = worker.root / "scratch-1" / "logs"
        logs.mkdir(parents=True)
        (logs / "ep05-1.log").write_text("x" * 1000 + "the last words")
        (logs / "ep05-2.log").symlink_to(secret)
        outside = tmp_path / "logs" / "ep05-1.log"
        outside.parent.mkdir()
        outside.write_text("outside the worker's folder")
        climbing = f"{logs}/{'../' * len(logs.parts)}{str(outside).lstrip('/')}"  # under the root, as written
        assert worker._child_output(str(logs / "ep05-1.log")).endswith("the last words")
        assert len(worker._child_output(str(logs / "ep05-1.log"))) <= 400
        for named in (str(secret), str(logs / "ep05-2.log"), climbing, str(outside), None, 42):
            assert worker._child_output(named) == "", named
    finally:
        worker.close()
