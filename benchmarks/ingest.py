"""CSV → validated snapshot: ctloop's ingestion against plain pyarrow (read CSV, write Parquet).

Generates a CSV of `--gb` gigabytes (default 1) in a temporary folder, then runs, each in its
own child process (so peak memory is that process's own): the baseline `pyarrow.csv.read_csv` +
`pyarrow.parquet.write_table`, and ctloop's `ingest_path` (streamed read, typing to the schema,
every validation check, row hashing, Parquet row groups, atomic commit) into a lake whose schema
a small first batch has set. Prints, as its last line, one JSON object:
{"bench": "ingest", "throughput_ratio": ..., "target_ratio": 0.5, "ctloop_peak_rss_gb": ...,
 "target_peak_rss_gb": 3, ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD_BASELINE = """
import json, resource, sys, time
import pyarrow.csv as pacsv, pyarrow.parquet as pq
started = time.perf_counter()
table = pacsv.read_csv(sys.argv[1])
pq.write_table(table, sys.argv[2], compression="snappy")
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "rows": table.num_rows,
                  "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

CHILD_CTLOOP = """
import json, resource, sys, time
from pathlib import Path
from ctloop.data.demo import demo_config
from ctloop.stores.home import Home
from ctloop.ingest.stage import ingest_path
config = demo_config(sys.argv[2])
home = Home(Path(sys.argv[2])).ensure()
started = time.perf_counter()
outcome = ingest_path(sys.argv[1], config, home)
seconds = time.perf_counter() - started
assert outcome.accepted, outcome.as_dict()
print(json.dumps({"seconds": seconds, "rows": outcome.write.manifest.rows,
                  "row_groups": outcome.write.manifest.row_groups,
                  "warnings": [i.check for i in outcome.report.warnings],
                  "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def make_csv(path: Path, gigabytes: float, seed: int = 0) -> int:
    """Write loan-like rows (the demo's columns) until the file has the wanted size."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from ctloop.data.demo import DemoScript, generate_day

    script = DemoScript(rows_per_day=50_000)
    target = int(gigabytes * 1e9)
    rows = 0
    with pacsv.CSVWriter(path, _schema_of(generate_day(script, 0, np.random.default_rng(0)))) as w:
        day = 0
        while path.stat().st_size < target:
            frame = generate_day(script, day % 28, np.random.default_rng(seed + day))
            frame["application_id"] = [f"B{day:05d}{i:06d}" for i in range(len(frame))]
            w.write_table(pa.Table.from_pandas(frame, preserve_index=False))
            rows += len(frame)
            day += 1
    return rows


def _schema_of(frame):
    import pyarrow as pa

    return pa.Table.from_pandas(frame, preserve_index=False).schema


def run_child(code: str, *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of the generated CSV")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ctloop-bench-ingest-") as tmp:
        tmp = Path(tmp)
        csv = tmp / "big.csv"
        started = time.perf_counter()
        rows = make_csv(csv, args.gb)
        size = csv.stat().st_size
        print(
            f"generated {size / 1e9:.2f} GB, {rows} rows in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )

        # a small first batch sets the schema, as in a lake that already has data
        import numpy as np

        from ctloop.data.demo import DemoScript, generate_day

        first = tmp / "first.csv"
        generate_day(DemoScript(rows_per_day=5000), 0, np.random.default_rng(99)).to_csv(
            first, index=False
        )
        home = tmp / "home"
        run_child(CHILD_CTLOOP, str(first), str(home))

        baseline = run_child(CHILD_BASELINE, str(csv), str(tmp / "plain.parquet"))
        print(f"pyarrow read+write: {baseline['seconds']:.1f} s", file=sys.stderr)
        ours = run_child(CHILD_CTLOOP, str(csv), str(home))
        print(f"ctloop ingest: {ours['seconds']:.1f} s", file=sys.stderr)
    result = {
        "bench": "ingest",
        "csv_gb": round(size / 1e9, 3),
        "rows": rows,
        "baseline_seconds": round(baseline["seconds"], 2),
        "ctloop_seconds": round(ours["seconds"], 2),
        "baseline_mb_per_s": round(size / 1e6 / baseline["seconds"], 1),
        "ctloop_mb_per_s": round(size / 1e6 / ours["seconds"], 1),
        "throughput_ratio": round(baseline["seconds"] / ours["seconds"], 3),
        "target_ratio": 0.5,
        "baseline_peak_rss_gb": round(baseline["peak_rss_kb"] / 1e6, 3),
        "ctloop_peak_rss_gb": round(ours["peak_rss_kb"] / 1e6, 3),
        "target_peak_rss_gb": 3.0,
        "ctloop_row_groups": ours["row_groups"],
        "ctloop_warnings": ours["warnings"],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
