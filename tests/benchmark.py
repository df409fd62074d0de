"""Speed of the grader, measured (not a test: run ``python tests/benchmark.py``).

Prints the wall time of ``python -c "import torch"`` (the floor every grading
run pays), of ``dsgrade ep05 --target solutions`` (what a student waits for
after editing one episode) and of grading everything, each the best of
``--repeat`` runs, with the ratios the project aims for (ep05 ≤ 1.3×, all ≤ 3×);
then the time of greedy decoding with and without episode 9's KV cache.
``--batch N`` instead times ``dsgrade batch`` of N full-course submissions (solutions, stubs and
broken copies) with 2 jobs and with 1, best of ``--repeat`` rounds (aims: ≤ 0.5× a torch import per
submission, ≥ 1.6× speed-up);
``--watch`` the time from a save to the end of ``dsgrade watch ep05``'s report (aim: ≤ 0.3 s).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def best_time(cmd: list[str], repeat: int) -> float:
    """Best wall time of ``repeat`` runs of ``cmd`` (exit status 0 or 1 accepted)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return min(times)


def cpu_and_steal() -> tuple[float, float]:
    """CPU seconds used by this process's finished children (user + sys), and seconds of CPU the
    hypervisor took from this machine since boot (Linux's ``steal``; 0 elsewhere). On a shared
    virtual machine wall times move with the neighbours' load: these two say how much."""
    import os
    import resource

    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        steal = int(Path("/proc/stat").read_text().split()[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        steal = 0.0
    return used.ru_utime + used.ru_stime, steal


def grader_timings(repeat: int) -> None:
    py = sys.executable
    floor = best_time([py, "-c", "import torch"], repeat)
    ep05 = best_time([py, "-m", "autograder", "ep05", "--target", "solutions"], repeat)
    everything = best_time([py, "-m", "autograder", "--target", "solutions"], repeat)
    rows = [
        ('python -c "import torch"', floor, ""),
        ("dsgrade ep05 --target solutions", ep05, f"({ep05 / floor:.2f}x the torch import; aim <= 1.3x)"),
        ("dsgrade --target solutions (all)", everything, f"({everything / floor:.2f}x; aim <= 3x)"),
    ]
    for label, seconds, note in rows:
        print(f"{label:<40} {seconds:6.2f} s  {note}")


def kv_cache_decoding(new_tokens: int = 256, window: int = 32) -> None:
    """Greedy decoding of ``new_tokens`` with episode 9's TinyLM, without and with the KV cache.

    Without the cache every step runs the model on the whole sequence, so a step
    gets slower as the text grows (the total is quadratic in its length). With it
    a step feeds one token, so the time per token stays about flat and the total
    grows linearly. Prints the total and the median time per token over the first
    and the last ``window`` steps (the first step, the prompt, left out), on one thread.
    """
    import statistics

    import torch

    from solutions.ep09_kv_cache import KVCache, TinyLM, generate_greedy, make_step_fn

    torch.set_num_threads(1)  # steadier figures on a shared machine
    torch.manual_seed(0)
    prompt = torch.randint(1000, (1, 16))
    model = TinyLM(vocab_size=1000, d_model=256, context_length=16 + new_tokens, num_heads=8).eval()
    tokens = {}
    for label, cache in (("without cache", None), ("with cache", KVCache())):
        step, times = make_step_fn(model, cache), []

        def timed_step(ids, step=step, times=times):
            start = time.perf_counter()
            logits = step(ids)
            times.append(time.perf_counter() - start)
            return logits

        with torch.no_grad():
            tokens[label] = generate_greedy(timed_step, prompt, new_tokens)
        early, late = (statistics.median(part) * 1e3 for part in (times[1:window + 1], times[-window:]))
        print(f"decode {new_tokens} tokens, {label:<14} {sum(times):6.2f} s  per token {early:5.2f} ms "
              f"(first {window}) -> {late:5.2f} ms (last {window}), x{late / early:.1f}")
    print(f"same tokens with and without the cache: {torch.equal(*tokens.values())}")


def class_of(n: int, root: Path) -> Path:
    """``n`` full-course submissions in ``root/submissions``: solutions, stubs and broken copies in turn."""
    import shutil

    repo = Path(__file__).resolve().parent.parent
    subs = root / "submissions"
    for i in range(n):
        kind = ("solutions", "stubs", "broken")[i % 3]
        dest = subs / f"student{i:03d}"
        shutil.copytree(repo / ("exercises" if kind == "stubs" else "solutions"), dest,
                        ignore=shutil.ignore_patterns("__pycache__", ".*"))
        if kind == "broken":  # a realistic mix: a missing scale, a syntax error, an exception in one function
            sdpa = dest / "ep05_self_attention.py"
            sdpa.write_text(sdpa.read_text().replace("/ math.sqrt(q.shape[-1])", ""))
            (dest / "ep14_integer_binary_pe.py").write_text("def broken(:\n")
            basics = dest / "ep04_attention_basics.py"
            basics.write_text(basics.read_text() + "\n\ndef attention_weights(scores):\n    return scores[99]\n")
    return subs


def batch_timings(n: int, repeat: int) -> None:
    """``dsgrade batch`` of ``n`` submissions with 2 jobs and with 1, per submission, next to a torch import.

    Each figure is the best of ``repeat`` rounds, as for the single runs; a round times the torch
    import and both batches back to back, so that on a shared machine the three see the same load.
    The slowest round is printed too: the host's neighbours move these times by 10–30 %.
    """
    import tempfile

    py = sys.executable
    floors, times, costs = [], {2: [], 1: []}, {2: [], 1: []}
    with tempfile.TemporaryDirectory() as tmp:
        subs = class_of(n, Path(tmp))
        for r in range(repeat):
            floors.append(best_time([py, "-c", "import torch"], 3))
            for jobs in (2, 1):
                out = Path(tmp) / f"out{jobs}-{r}"
                before = cpu_and_steal()
                times[jobs].append(best_time([py, "-m", "autograder", "batch", str(subs), "--out", str(out),
                                              "--jobs", str(jobs), "--timeout", "1"], 1))
                costs[jobs].append([b - a for a, b in zip(before, cpu_and_steal())])
    floor = min(floors)
    label = 'python -c "import torch"'
    print(f"{label:<40} {floor:6.2f} s  (slowest round {max(floors):.2f} s)")
    for jobs in (2, 1):
        best = min(range(repeat), key=times[jobs].__getitem__)
        each = times[jobs][best] / n
        cpu, steal = costs[jobs][best]
        print(f"dsgrade batch, {n} submissions, --jobs {jobs}  {times[jobs][best]:6.2f} s  = {each:5.2f} s each "
              f"({each / floor:.2f}x the torch import{'; aim <= 0.5x' if jobs == 2 else ''}); "
              f"CPU {cpu / n:.2f} s each, {steal:.1f} s stolen by the hypervisor meanwhile; "
              f"slowest round {max(times[jobs]):.2f} s")
    print(f"speed-up from 1 to 2 jobs: {min(times[1]) / min(times[2]):.2f}x (aim >= 1.6x); "
          f"per round: {', '.join(f'{one / two:.2f}x' for one, two in zip(times[1], times[2]))}")


def watch_timings(saves: int = 10) -> None:
    """``dsgrade watch ep05``: the time from writing the file to the end of the printed report, median of saves."""
    import statistics
    import tempfile
    import shutil

    repo = Path(__file__).resolve().parent.parent
    floor = best_time([sys.executable, "-c", "import torch"], 3)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "mine"
        shutil.copytree(repo / "exercises", target, ignore=shutil.ignore_patterns("__pycache__", ".*"))
        source = (repo / "solutions" / "ep05_self_attention.py").read_text()
        (target / "ep05_self_attention.py").write_text(source)
        proc = subprocess.Popen([sys.executable, "-m", "autograder", "watch", "ep05", "--target", str(target)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def report_done() -> None:
            for line in proc.stdout:
                if "for changes (Ctrl-C to stop)" in line:
                    return
            raise SystemExit("dsgrade watch ended")

        report_done()  # the first round
        times = []
        for i in range(saves):
            time.sleep(0.5)
            start = time.perf_counter()
            (target / "ep05_self_attention.py").write_text(source + f"\n# save {i}\n")
            report_done()
            times.append(time.perf_counter() - start)
        proc.send_signal(2)
        proc.wait()
    median = statistics.median(times)
    label = 'python -c "import torch"'
    print(f"{label:<40} {floor:6.2f} s")
    print(f"dsgrade watch ep05: save -> report       {median:6.3f} s  median of {saves} "
          f"({median / floor:.2f}x the torch import; aim <= 0.3 s); min {min(times):.3f}, max {max(times):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per command; the best is reported")
    parser.add_argument("--batch", type=int, metavar="N", help="instead: time `dsgrade batch` of N submissions")
    parser.add_argument("--watch", action="store_true", help="instead: time `dsgrade watch ep05` from save to report")
    args = parser.parse_args()
    if args.batch:
        batch_timings(args.batch, args.repeat)
        return
    if args.watch:
        watch_timings()
        return
    grader_timings(args.repeat)
    kv_cache_decoding()


if __name__ == "__main__":
    main()
