"""Speed of the grader, measured (not a test: run ``python tests/benchmark.py``).

Prints the wall time of ``python -c "import torch"`` (the floor every grading
run pays), of ``dsgrade ep05 --target solutions`` (what a student waits for
after editing one episode) and of grading everything, each the best of
``--repeat`` runs, with the ratios the project aims for (ep05 ≤ 2×, all ≤ 8×).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time


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


def grader_timings(repeat: int) -> None:
    py = sys.executable
    floor = best_time([py, "-c", "import torch"], repeat)
    ep05 = best_time([py, "-m", "autograder", "ep05", "--target", "solutions"], repeat)
    everything = best_time([py, "-m", "autograder", "--target", "solutions"], repeat)
    rows = [
        ('python -c "import torch"', floor, ""),
        ("dsgrade ep05 --target solutions", ep05, f"({ep05 / floor:.1f}x the torch import; aim <= 2x)"),
        ("dsgrade --target solutions (all)", everything, f"({everything / floor:.1f}x; aim <= 8x)"),
    ]
    for label, seconds, note in rows:
        print(f"{label:<40} {seconds:6.2f} s  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per command; the best is reported")
    args = parser.parse_args()
    grader_timings(args.repeat)


if __name__ == "__main__":
    main()
