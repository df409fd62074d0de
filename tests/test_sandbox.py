"""Hostile submissions, graded through ``dsgrade`` as an instructor would: every attack costs only its own points.

Each attack replaces one exercise of a copy of the solutions (or one whole episode
file) with code that tries one thing a hostile student tried: reading the
reference, rewriting the grader, reaching the grader's process, leaving
processes behind, exhausting resources, handing in files that hang or crash the
grader, forging report text, and sabotaging later episodes. For each run the test
shows that the attacked exercise gets 0 with a clear message, that everything else
keeps full marks, and that the grader's files, the reference, the fixtures, the
grader's saved state and the report are byte-identical afterwards.

These tests need the sandbox of this (Linux) machine and fail without it: CI runs them.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import string
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import pytest
from conftest import ROOT, SOLUTIONS, _env, copy_solutions, dependents, module_of

from autograder import cli, registry, sandbox
from autograder.reference import record_fixtures

EXERCISES = ROOT / "exercises"


# --- attacks: one exercise each ------------------------------------------------------------------
# Each is the body of a module that replaces one exercise of an episode (the rest of the episode is the
# reference, re-exported). Attacks that *succeed* return the stolen correct answer (so the check would
# pass) or put "escaped=[…]" with what got through in their error; the test demands 0 points and
# "escaped=[]". ``$name`` is replaced by a path of the run (see ``attacked_run``).

READ_REFERENCE = {
    # autograder.__file__ leads to the checkout, and solutions/ beside it.
    ("ep04", "attention_scores"): '''
def attention_scores(*args, **kwargs):
    import autograder, pathlib
    src = pathlib.Path(autograder.__file__).resolve().parent.parent / "solutions" / "ep04_attention_basics.py"
    ns = {}
    exec(compile(src.read_text(), str(src), "exec"), ns)
    return ns["attention_scores"](*args, **kwargs)
''',
    # A walk up from every sys.path entry and the working directory, then spec_from_file_location.
    ("ep04", "attention_weights"): '''
def attention_weights(*args, **kwargs):
    import importlib.util, os, sys
    for entry in list(sys.path) + [os.getcwd()]:
        d = entry
        for _ in range(6):
            candidate = os.path.join(d, "solutions", "ep04_attention_basics.py")
            if os.path.exists(candidate):
                spec = importlib.util.spec_from_file_location("stolen", candidate)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                return module.attention_weights(*args, **kwargs)
            d = os.path.dirname(d)
    raise RuntimeError("no reference found")
''',
    # Remove the grader's import hook, forget cached modules, import through the editable-install finder.
    ("ep04", "context_vectors"): '''
def context_vectors(*args, **kwargs):
    import importlib, sys
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_BlockSolutions"]
    for name in [m for m in sys.modules if m == "solutions" or m.startswith("solutions.")]:
        del sys.modules[name]
    return importlib.import_module("solutions.ep04_attention_basics").context_vectors(*args, **kwargs)
''',
    # The fixtures file named on the grader's command line: from /proc, or by its path.
    ("ep14", "integer_positional_encoding"): '''
def integer_positional_encoding(*args, **kwargs):
    import os
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            if b"--fixtures" in cmdline:
                found.append(cmdline)
    data = open($fixtures, "rb").read()
    raise RuntimeError(f"escaped=[read the fixtures: {len(data)} bytes, {len(found)} command lines]")
''',
    # Search the disk (what is reachable of it) for any reference copy, for half a second.
    ("ep14", "binary_positional_encoding"): '''
def binary_positional_encoding(*args, **kwargs):
    import os, time
    start, escaped = time.monotonic(), []
    for top in ("/", "/root", "/home", "/tmp", "/work", os.path.expanduser("~"), $root):
        for folder, _, files in os.walk(top):
            if time.monotonic() - start > 0.5:
                break
            if "ep14_integer_binary_pe.py" in files:
                try:
                    text = open(os.path.join(folder, "ep14_integer_binary_pe.py")).read()
                except OSError:
                    continue
                if "BEGIN SOLUTION" in text:
                    escaped.append(folder)
    raise RuntimeError(f"escaped={escaped}")
''',
}

REWRITE_GRADER = {
    # Write (or create) every file that later gradings or the grader itself would read or run.
    ("ep14", "add_positional_encoding"): '''
def add_positional_encoding(*args, **kwargs):
    import os
    escaped = []
    targets = [$autograder + "/report.py", $autograder + "/checks/conftest.py", $autograder + "/pwned.py",
               $solutions + "/ep04_attention_basics.py", $fixtures, $exercises + "/config.py",
               $cache + "/last-0000000000000000.json", $submission + "/ep01_introduction.py",
               $report, $junit, "/tmp/dsgrade-pwned", $home + "/pwned"]
    for path in targets:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError:
            continue
        os.close(fd)
        escaped.append(path)
    raise RuntimeError(f"escaped={escaped}")
''',
}

REACH_GRADER = {
    # The grader's process: its command line and environment, its memory, its terminal, signals.
    ("ep01", "count_parameters"): '''
def count_parameters(*args, **kwargs):
    import ctypes, os, signal
    escaped = []
    for what in ("cmdline", "environ", "mem", "fd/1"):
        for pid in ("1", str(os.getppid()), "self/.."):
            try:
                with open(f"/proc/{pid}/{what}", "rb" if what != "fd/1" else "wb") as f:
                    f.read(16) if what != "fd/1" else f.write(b"score 620/620")
                escaped.append(f"/proc/{pid}/{what}")
            except OSError:
                pass
    for pid in range(1, 4096):  # is there any process, besides itself, that this code could signal?
        try:
            if pid != os.getpid():
                os.kill(pid, 0)
                escaped.append(f"kill({pid})")
        except OSError:
            pass
    libc = ctypes.CDLL(None, use_errno=True)
    for pid in {1, os.getppid()}:
        if libc.ptrace(16, pid, 0, 0) == 0:  # PTRACE_ATTACH
            escaped.append(f"ptrace({pid})")
        buf = ctypes.create_string_buffer(8)
        local = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)
        remote = (ctypes.c_void_p * 2)(0x400000, 8)
        if libc.process_vm_readv(pid, local, 1, remote, 1, 0) > 0:
            escaped.append(f"process_vm_readv({pid})")
    for pid in {1, os.getppid()} - {0}:  # what this code sees as init (the zygote) and its parent
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    raise RuntimeError(f"escaped={escaped}")
''',
    # No network: TCP to a server of the test on 127.0.0.1, and UDP.
    ("ep01", "moe_parameter_counts"): '''
def moe_parameter_counts(*args, **kwargs):
    import socket
    escaped = []
    try:
        socket.create_connection(("127.0.0.1", $port), timeout=1).sendall(b"stolen")
        escaped.append("tcp")
    except OSError:
        pass
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"stolen", ("127.0.0.1", $port))
        escaped.append("udp")
    except OSError:
        pass
    raise RuntimeError(f"escaped={escaped}")
''',
}

OUTLIVE = {
    # A double-forked daemon that would rewrite the report after the grader exits; a fork bomb;
    # a process started with subprocess.
    ("ep20", "importance_cv_loss"): '''
def importance_cv_loss(*args, **kwargs):
    import os, subprocess
    escaped = []
    for attempt in ("daemon", "bomb", "subprocess"):
        try:
            if attempt == "subprocess":
                subprocess.Popen(["sleep", "60"])
            elif os.fork() == 0:
                if attempt == "bomb":
                    while True:
                        os.fork()
                os.setsid()
                if os.fork() == 0:
                    import time
                    time.sleep(3)
                    open($report, "w").write("{}")
                os._exit(0)
            escaped.append(attempt)
        except OSError:
            pass
    raise RuntimeError(f"escaped={escaped}")
''',
    # Threads outlive the call: one spins forever, one would rewrite the report later.
    ("ep20", "switch_load_balancing_loss"): '''
def switch_load_balancing_loss(*args, **kwargs):
    import threading, time
    def spin():
        while True:
            pass
    def later():
        time.sleep(3)
        open($report, "w").write("{}")
    threading.Thread(target=spin, daemon=True).start()
    threading.Thread(target=later).start()
    raise RuntimeError("threads started")
''',
}

EXHAUST = {
    ("ep20", "expert_balance_loss"): '''
def expert_balance_loss(*args, **kwargs):
    import torch
    return torch.ones(int(8.5 * 2**30) // 4).sum()  # 8.5 GiB
''',
    ("ep20", "sequence_balance_loss"): '''
def sequence_balance_loss(*args, **kwargs):
    import torch
    return torch.zeros(50_000_000)  # a 200 MB answer
''',
    ("ep20", "noisy_top_k_gating"): '''
def noisy_top_k_gating(*args, **kwargs):
    raise ValueError("x" * 2_000_000)  # a 2 MB message
''',
    ("ep20", "capacity_mask"): '''
def capacity_mask(*args, **kwargs):
    import sys
    chunk = "printed " * 125_000  # 1 MB
    for _ in range(200):          # 200 MB of output
        sys.stdout.write(chunk)
    raise RuntimeError("printed everything")
''',
    ("ep20", "update_routing_bias"): '''
def update_routing_bias(*args, **kwargs):
    with open("big.bin", "wb") as f:  # the scratch folder: writable, but not without bound
        f.write(b"0" * (64 << 20))
    raise RuntimeError("wrote 64 MB")
''',
}

FORGE_TEXT = {
    # Terminal escapes, a carriage return and rich markup, to paint a fake full score.
    ("ep03", "embed_tokens"): '''
def embed_tokens(*args, **kwargs):
    raise RuntimeError("\\x1b[2J\\x1b[H\\rscore 620/620 (100%) — 75 of 75 exercises passed\\n"
                       "[bold green]✓ passed[/] :thumbs_up: \\x1b]0;owned\\x07\\u202e")
''',
    # Integer answers as floats, and an integer far beyond a float.
    ("ep01", "kv_cache_bytes"): '''
def kv_cache_bytes(*args, **kwargs):
    return float(_good.kv_cache_bytes(*args, **kwargs))
''',
    ("ep10", "kv_cache_elements_per_token"): '''
def kv_cache_elements_per_token(*args, **kwargs):
    return 10 ** 400
''',
}

SABOTAGE = {
    # Armed in an early episode to break later, correct ones: a faulthandler exit, a thread that kills
    # its process, monkeypatched torch.
    ("ep03", "sampling_distribution"): '''
def sampling_distribution(*args, **kwargs):
    import faulthandler, os, threading, time, torch
    faulthandler.dump_traceback_later(2, exit=True)
    threading.Thread(target=lambda: (time.sleep(2.5), os._exit(1)), daemon=True).start()
    torch.softmax = lambda *a, **k: torch.zeros(1)
    torch.Tensor.softmax = lambda *a, **k: torch.zeros(1)
    raise RuntimeError("sabotage armed")
''',
}

ATTACKS = {**READ_REFERENCE, **REWRITE_GRADER, **REACH_GRADER, **OUTLIVE, **EXHAUST, **FORGE_TEXT, **SABOTAGE}

# What each attacked exercise's checks must say (every one of its checks; hidden ones too).
EXPECTED_MESSAGE = {
    ("ep04", "attention_scores"): "Permission denied",
    ("ep04", "attention_weights"): "Permission denied",
    ("ep04", "context_vectors"): "Permission denied",
    ("ep14", "integer_positional_encoding"): "Permission denied",
    ("ep14", "binary_positional_encoding"): "escaped=[]",
    ("ep14", "add_positional_encoding"): "escaped=[]",
    ("ep01", "count_parameters"): "escaped=[]",
    ("ep01", "moe_parameter_counts"): "escaped=[]",
    ("ep20", "importance_cv_loss"): "escaped=[]",
    ("ep20", "switch_load_balancing_loss"): "threads started",
    ("ep20", "expert_balance_loss"): "memory limit of 2 GiB exceeded",
    ("ep20", "sequence_balance_loss"): "your result is too large to grade: 191 MiB (the limit is 64 MiB)",
    ("ep20", "noisy_top_k_gating"): "ValueError: xxxx",
    ("ep20", "capacity_mask"): "File too large",
    ("ep20", "update_routing_bias"): "File too large",
    ("ep03", "embed_tokens"): "RuntimeError:",
    ("ep01", "kv_cache_bytes"): "the result is an integer",
    ("ep10", "kv_cache_elements_per_token"): "digits",
    ("ep03", "sampling_distribution"): "sabotage armed",
}

# Whole files that would hang or crash a grader that opened them naively.
BAD_FILES = {
    "ep13": "fifo",            # a named pipe: open() blocks forever
    "ep15": "symlink",         # a link to the reference
    "ep11": "huge",            # 1 GiB (sparse)
    "ep09": "loop",            # a symbolic link to itself
}
BAD_FILE_MESSAGE = {"fifo": "a named pipe (FIFO)", "symlink": "a symbolic link", "huge": "over the limit of 1 MiB",
                    "loop": "a symbolic link"}


def _tree_digest(*paths: Path) -> dict[str, str]:
    """sha256 of every file under ``paths`` (and of each path that is a file); missing ones as None."""
    digests = {}
    for top in paths:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file() and
                                                    "__pycache__" not in p.parts) if top.exists() else []
        for f in files:
            size = f.stat().st_size
            digests[str(f)] = f"{size} bytes" if size > 16 << 20 else hashlib.sha256(f.read_bytes()).hexdigest()
        if not files:
            digests[str(top)] = None
    return digests


def _processes_of(pid: int) -> list[str]:
    """Command lines of live processes whose command line names ``pid`` as their grader (the worker's)."""
    marker = f'"parent": {pid}'.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmdline:
                found.append(cmdline.decode(errors="replace")[:200])
    return found


def _replace_exercises(sub: Path, episode_id: str, bodies: list[str]) -> None:
    """Rewrites one episode of ``sub`` as: the reference, re-exported, with some exercises replaced."""
    module = module_of(episode_id)
    (sub / f"{module}.py").rename(sub / f"{module}_good.py")
    head = f"from .{module}_good import *  # noqa: F403\nfrom . import {module}_good as _good  # noqa: F401\n"
    (sub / f"{module}.py").write_text(head + "\n".join(bodies))


class _Server:
    """A TCP and UDP listener on 127.0.0.1 that counts what reaches it."""

    def __init__(self):
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen()
        self.tcp.settimeout(0.2)
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.udp.settimeout(0.2)
        self.received: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop:
            for sock, kind in ((self.tcp, "tcp"), (self.udp, "udp")):
                try:
                    if kind == "tcp":
                        self.tcp.accept()
                    else:
                        self.udp.recv(64)
                    self.received.append(kind)
                except OSError:
                    pass

    def close(self):
        self._stop = True
        self._thread.join()
        self.tcp.close()
        self.udp.close()


@pytest.fixture(scope="module")
def attacked_run(tmp_path_factory):
    """Grades (everything, with recorded fixtures, JSON and JUnit reports) a submission full of attacks."""
    assert not sandbox.missing_layers("strict"), "these tests need the full sandbox of this machine"
    tmp = tmp_path_factory.mktemp("attacks")
    sub = copy_solutions(tmp / "sub")
    fixtures = tmp / "fixtures.bin"
    record_fixtures(registry.all_episodes(), 1234, fixtures)
    cache = tmp / "cache"
    (cache / "dsgrade").mkdir(parents=True)
    (cache / "dsgrade" / "last-0000000000000000.json").write_text('{"ep05.SelfAttention": {"status": "passed"}}')
    report, junit = tmp / "out" / "report.json", tmp / "out" / "junit.xml"
    report.parent.mkdir()
    server = _Server()
    paths = {k: repr(str(v)) for k, v in dict(
        root=ROOT, autograder=ROOT / "autograder", solutions=SOLUTIONS, exercises=EXERCISES, fixtures=fixtures,
        cache=cache / "dsgrade", submission=sub, report=report, junit=junit, home=Path.home()).items()}
    paths["port"] = str(server.port)
    by_episode: dict[str, list[str]] = {}
    for (ep, _name), body in ATTACKS.items():
        by_episode.setdefault(ep, []).append(string.Template(body).substitute(paths))
    for ep, bodies in by_episode.items():
        _replace_exercises(sub, ep, bodies)
    _bad_files(sub)
    guarded = [ROOT / "autograder", SOLUTIONS, EXERCISES, fixtures, cache, Path("/tmp/dsgrade-pwned"),
               Path.home() / "pwned"]
    before = _tree_digest(*guarded)
    submission_before = _tree_digest(sub)
    env = dict(_env(), XDG_CACHE_HOME=str(cache))
    cmd = [sys.executable, "-m", "autograder", "--target", str(sub), "--fixtures", str(fixtures),
           "--json", str(report), "--junitxml", str(junit), "--timeout", "10", "--sandbox", "strict"]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=900)
    seconds = time.monotonic() - start
    report_text = report.read_text() if report.exists() else ""
    leftover = _processes_of(proc.pid)
    time.sleep(4)  # anything that survived would rewrite the report now
    server.close()
    with mock.patch.dict(os.environ, XDG_CACHE_HOME=str(cache)):
        own_state = str(cli._state_file(sub))  # `dsgrade list` remembers this target's statuses there
    yield dict(code=proc.returncode, own_state=own_state, out=out, err=err, report=json.loads(report_text) if report_text else None,
               report_text=report_text, report_later=report.read_text() if report.exists() else "",
               before=before, after=_tree_digest(*guarded), submission_before=submission_before,
               submission_after=_tree_digest(sub), leftover=leftover + _processes_of(proc.pid),
               received=server.received, seconds=seconds)


def _bad_files(sub: Path) -> None:
    for ep, kind in BAD_FILES.items():
        path = sub / f"{module_of(ep)}.py"
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "symlink":
            path.symlink_to(SOLUTIONS / path.name)
        elif kind == "huge":
            with open(path, "wb") as f:
                f.truncate(1 << 30)
        else:
            path.symlink_to(path.name)


def _exercises(report: dict) -> dict:
    return {ex["id"]: ex for ex in report["exercises"]}


def test_the_grader_finishes_and_writes_every_report(attacked_run):
    run = attacked_run
    assert run["code"] == 1 and "Traceback" not in run["err"], run["err"][-3000:]
    assert run["report"] is not None and run["report"]["sandbox"]["applied"] == list(sandbox.LAYERS)
    assert "internal error" not in run["report_text"]
    assert run["seconds"] < 300


def test_each_attacked_exercise_scores_zero_with_a_clear_message(attacked_run):
    exercises = _exercises(attacked_run["report"])
    for (ep, name), expected in EXPECTED_MESSAGE.items():
        ex = exercises[f"{ep}.{name}"]
        assert ex["score"] == 0, (ex["id"], [c["message"] for c in ex["checks"]])
        for c in ex["checks"]:
            assert expected in c["message"], (ex["id"], c["message"][:500])
            assert len(c["message"]) < 2500, ex["id"]  # a 2 MB message is cut to a few KB


def test_bad_files_are_refused_and_their_episode_says_why(attacked_run):
    report = attacked_run["report"]
    episodes = {ep["id"]: ep for ep in report["episodes"]}
    for ep, kind in BAD_FILES.items():
        name = f"{module_of(ep)}.py"
        assert BAD_FILE_MESSAGE[kind] in report["refused_files"][name], (name, report["refused_files"])
        assert episodes[ep]["score"] == 0
        for ex in report["exercises"]:
            if ex["episode"] == ep:
                assert all(f"{name} was not graded" in c["message"] for c in ex["checks"]), ex["checks"][0]


def test_everything_else_keeps_full_marks(attacked_run):
    attacked = {f"{ep}.{name}" for ep, name in ATTACKS}
    broken_modules = {module_of(ep) for ep in BAD_FILES}
    affected = {m for m in broken_modules | dependents(broken_modules)}
    for ex in attacked_run["report"]["exercises"]:
        if ex["id"] in attacked or module_of(ex["episode"]) in affected:
            continue
        assert ex["score"] == ex["max_score"], (ex["id"], [c["message"] for c in ex["checks"] if not c["passed"]])


def test_no_file_of_the_grader_the_reference_the_fixtures_or_the_state_changed(attacked_run):
    before, after = attacked_run["before"], attacked_run["after"]
    assert {path: after.get(path) for path in before} == before
    assert set(after) - set(before) == {attacked_run["own_state"]}, "only the grader's own state file is new"
    assert attacked_run["submission_after"] == attacked_run["submission_before"]


def test_nothing_outlives_the_grading(attacked_run):
    assert attacked_run["leftover"] == []
    assert attacked_run["report_later"] == attacked_run["report_text"], "the report changed after the grader exited"


def test_no_network(attacked_run):
    assert attacked_run["received"] == []


def test_forged_text_reaches_neither_terminal_nor_report(attacked_run):
    out = attacked_run["out"]
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out
    assert "\x1b" not in attacked_run["report_text"] and "\\u001b" not in attacked_run["report_text"]
    lines = [line for line in out.splitlines() if "score 620/620" in line]
    assert lines and all(not line.startswith("score") for line in lines), lines  # only inside a message
    assert "[bold green]✓ passed[/]" in out  # rich markup printed literally, not rendered
    assert ":thumbs_up:" in out


def test_a_refusing_strict_sandbox_exits_2_with_one_line(tmp_path):
    """--sandbox strict on a machine without user namespaces (simulated: they are disabled for the child)."""
    code = ("import sys; from autograder import sandbox, cli; "
            "sandbox._support_here.cache_clear(); "
            "sandbox.support = lambda try_namespaces=True: {'namespaces': 'disabled here', 'landlock': None, "
            "'seccomp': None}; "
            "sys.exit(cli.main(['ep04', '--target', 'solutions', '--sandbox', 'strict']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "dsgrade: --sandbox strict: student code cannot be sandboxed on this machine "
        "(namespaces: disabled here); not grading"]


def test_the_read_attacks_are_real_they_succeed_without_the_sandbox(tmp_path):
    """The same reads with --sandbox off score full marks: the sandbox, not the attack code, stops them."""
    sub = copy_solutions(tmp_path / "sub")
    _replace_exercises(sub, "ep04", [body for (ep, _), body in READ_REFERENCE.items() if ep == "ep04"])
    report = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "autograder", "ep04", "--target", str(sub), "--sandbox", "off",
                           "--json", str(report)], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:]
    result = json.loads(report.read_text())
    assert result["score"] == result["max_score"] and result["sandbox"]["applied"] == []
    assert "sandbox: off" in done.stdout
