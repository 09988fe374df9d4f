"""Install time: the README's install step (`make .venv/.installed`: uv) against plain pip.

Clones this checkout's HEAD into a temporary folder and installs the project with its dev extra
twice into fresh virtual environments: `pip install -e .[dev]` (the baseline) and the Makefile's
`uv pip install -e .[dev]` (the time to install uv itself included). Both use whatever the
package caches hold, as CI does on this machine. Prints one JSON object as its last line:
{"bench": "install", "pip_s": ..., "uv_s": ..., "ratio": pip/uv, "target_ratio": 2, ...};
`--record` appends it to benchmarks/results/install.jsonl.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _record import ROOT, emit, loadavg, machine

TARGET_RATIO = 2.0
PYTHON = shutil.which("python3") or sys.executable


def timed(commands: list[list[str]], cwd: Path) -> float:
    started = time.perf_counter()
    for command in commands:
        proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="append to results/install.jsonl")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="ctloop-bench-install-"))
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(tmp / "repo")], check=True)
        repo = tmp / "repo"
        load_before = loadavg()
        pip_s = timed(
            [
                [PYTHON, "-m", "venv", ".venv-pip"],
                [".venv-pip/bin/pip", "install", "--quiet", "--upgrade", "pip"],
                [".venv-pip/bin/pip", "install", "--quiet", "-e", ".[dev]"],
            ],
            repo,
        )
        uv_s = timed(
            [
                [PYTHON, "-m", "venv", ".venv"],
                [".venv/bin/pip", "install", "--quiet", "--upgrade", "pip", "uv"],
                [".venv/bin/uv", "pip", "install", "--quiet", "--python", ".venv/bin/python",
                 "-e", ".[dev]"],
            ],
            repo,
        )  # fmt: skip
        check = subprocess.run([".venv/bin/ctloop", "--version"], cwd=repo, capture_output=True)
        if check.returncode != 0:
            sys.exit("the uv-installed ctloop does not start")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = pip_s / uv_s
    print(f"pip {pip_s:.1f} s, uv {uv_s:.1f} s: {ratio:.1f}x", file=sys.stderr)
    result = {
        "bench": "install",
        "pip_s": round(pip_s, 1),
        "uv_s": round(uv_s, 1),
        "ratio": round(ratio, 2),
        "target_ratio": TARGET_RATIO,
        "ok": ratio >= TARGET_RATIO,
        "loadavg_before": load_before,
        **machine(),
    }
    emit(result, "install", args.record)


if __name__ == "__main__":
    main()
