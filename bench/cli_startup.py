"""CLI start-up benchmark: `orbisctl --help` beside `python -c pass`, in the same run.

Both are started as fresh processes of this virtualenv's Python, alternately, `--runs` times
each; the median of each and their ratio are the figures (on a shared machine the absolute
numbers are noise, the ratio less so). Prints a table and writes JSON.

    .venv/bin/python bench/cli_startup.py [--runs 21] [--json bench/results/cli_startup.json]
    # beside orbisctl as of an older commit, in the same run
    git archive b37fd60 orbisctl runtime backups healthchecks templates | tar -x -C /tmp/cli-before
    .venv/bin/python bench/cli_startup.py --other-tree /tmp/cli-before
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

HELP = [sys.executable, "-m", "orbisctl.cli", "--help"]


def _seconds(argv: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def measure(runs: int, other_tree: Path | None) -> dict[str, list[float]]:
    """Seconds per start of each command; they alternate so all see the same load. A command
    runs from its tree (the working directory comes first on `python -m`'s path)."""
    commands = {
        "python -c pass": ([sys.executable, "-c", "pass"], REPO),
        "orbisctl --help": (HELP, REPO),
    }
    if other_tree is not None:
        commands["orbisctl --help (other tree)"] = (HELP, other_tree)
    for argv, cwd in commands.values():
        _seconds(argv, cwd)  # warm the page cache and the bytecode
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, (argv, cwd) in commands.items():
            samples[name].append(_seconds(argv, cwd))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--json", type=Path, default=REPO / "bench/results/cli_startup.json")
    parser.add_argument("--other-tree", type=Path, help="also time orbisctl from this tree")
    args = parser.parse_args()

    samples = measure(args.runs, args.other_tree)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    baseline = medians["python -c pass"]
    print(f"{'command':<30} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'ratio':>6}")
    for name, values in samples.items():
        print(
            f"{name:<30} {medians[name] * 1000:>10.0f} {min(values) * 1000:>8.0f}"
            f" {max(values) * 1000:>8.0f} {medians[name] / baseline:>6.1f}"
        )
    result = {
        "runs": args.runs,
        "median_seconds": medians,
        "ratio_to_python": {name: median / baseline for name, median in medians.items()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
