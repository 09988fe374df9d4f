"""CLI start-up: `ctloop --help` and `ctloop status` on a demo home, against Python's own start.

Builds a demo home once (`ctloop demo --days 24 --rows-per-day N` in a temporary folder, or
reuses `--home`), then times, each in a fresh process and interleaved so load swings hit all
alike, the baseline (`python -c pass`, `python -c "import typer"`), `ctloop --help` and
`ctloop status`; reports the median of `--runs` runs. Prints, as its last line, one JSON object:
{"bench": "cli", "help_s": ..., "status_s": ..., "target_help_s": 1.0, "target_status_s": 1.5,
 "python_startup_s": ..., "help_ratio_to_python": ..., "commit": ..., "loadavg": ...}.
`--record` also appends that line to `benchmarks/results/cli.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _record import commit, loadavg

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CTLOOP = str(BIN / "ctloop")
TARGET_HELP_S = 1.0
TARGET_STATUS_S = 1.5


def clean_env() -> dict[str, str]:
    """The caller's environment without ctloop or Prefect settings (the home is a flag)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTLOOP_", "PREFECT_"))}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    return env


def build_home(folder: Path, days: int, rows_per_day: int) -> float:
    """Run the demo into `folder/home`; returns the seconds it took."""
    started = time.perf_counter()
    proc = subprocess.run(
        [CTLOOP, "demo", "--home", str(folder / "home"), "--days", str(days),
         "--rows-per-day", str(rows_per_day), "--json"],
        cwd=folder, env=clean_env(), capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"ctloop demo failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=clean_env(), capture_output=True, timeout=300)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{proc.stderr.decode()[-3000:]}")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each command")
    parser.add_argument("--days", type=int, default=24, help="demo days (at least 24)")
    parser.add_argument("--rows-per-day", type=int, default=60, help="demo rows per day")
    parser.add_argument("--home", type=Path, help="an existing demo home (skips the demo)")
    parser.add_argument("--record", action="store_true", help="append to results/cli.jsonl")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="ctloop-bench-cli-"))
    try:
        build_s = None
        if args.home:
            home = args.home.resolve()
        else:
            print(f"building a demo home ({args.days} days x {args.rows_per_day} rows)...",
                  file=sys.stderr)  # fmt: skip
            build_s = build_home(tmp, args.days, args.rows_per_day)
            home = tmp / "home"
        status = subprocess.run(
            [CTLOOP, "status", "--home", str(home), "--json"],
            cwd=tmp, env=clean_env(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        answer = json.loads(status.stdout)
        if not answer.get("champion"):
            sys.exit(f"{home}: the demo home has no champion: {status.stdout[:500]}")

        commands = {
            "python_startup_s": [sys.executable, "-c", "pass"],
            "typer_import_s": [sys.executable, "-c", "import typer"],
            "help_s": [CTLOOP, "--help"],
            "status_s": [CTLOOP, "status", "--home", str(home)],
        }
        for command in commands.values():  # warm the file cache once
            timed(command, tmp)
        samples: dict[str, list[float]] = {key: [] for key in commands}
        load_before = loadavg()
        for _ in range(args.runs):
            for key, command in commands.items():
                samples[key].append(timed(command, tmp))
        medians = {key: statistics.median(values) for key, values in samples.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    python_s = medians["python_startup_s"]
    result = {
        "bench": "cli",
        "help_s": round(medians["help_s"], 3),
        "status_s": round(medians["status_s"], 3),
        "target_help_s": TARGET_HELP_S,
        "target_status_s": TARGET_STATUS_S,
        "python_startup_s": round(python_s, 3),
        "typer_import_s": round(medians["typer_import_s"], 3),
        "help_ratio_to_python": round(medians["help_s"] / python_s, 2),
        "status_ratio_to_python": round(medians["status_s"] / python_s, 2),
        "help_ok": medians["help_s"] <= TARGET_HELP_S,
        "status_ok": medians["status_s"] <= TARGET_STATUS_S,
        "runs": args.runs,
        "status_versions": len(answer.get("versions", [])),
        "status_snapshots": answer.get("snapshots"),
        "demo_build_s": None if build_s is None else round(build_s, 1),
        "commit": commit(),
        "loadavg": loadavg(),
        "loadavg_before": load_before,
        "cpus": os.cpu_count(),
    }
    print(
        f"--help {result['help_s']:.2f} s (target {TARGET_HELP_S}), status "
        f"{result['status_s']:.2f} s (target {TARGET_STATUS_S}), python start "
        f"{python_s:.2f} s, median of {args.runs}",
        file=sys.stderr,
    )
    line = json.dumps(result)
    if args.record:
        results = ROOT / "benchmarks" / "results"
        results.mkdir(parents=True, exist_ok=True)
        with open(results / "cli.jsonl", "a") as handle:
            handle.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
