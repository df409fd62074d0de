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


def test_the_zygote_serves_from_huge_pages():
    worker = Worker(worker_config("auto", sandbox.DEFAULT_MEMORY, [], ["ep01"]))
    try:
        worker.wait_ready()
        waiter = worker.proc.pid  # the zygote is the waiter's only child
        deadline = time.monotonic() + 10
        while not (children := Path(f"/proc/{waiter}/task/{waiter}/children").read_text().split()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        if _collapse_supported():
            assert _anon_huge_bytes(children[0]) >= 64 << 20  # torch's ~150 MB, most of it collapsed
    finally:
        worker.close()
