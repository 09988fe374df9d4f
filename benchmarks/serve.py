"""Model server throughput and latency: `ctloop serve` against `mlflow models serve`, same version.

One model version (the demo's default family, trained on demo rows, registered in a fresh
embedded home) is served twice on 127.0.0.1: by `ctloop serve` (prediction log on, as in
production) and by `mlflow models serve --env-manager local`. Each server gets the same
single-record requests at the same concurrency from the same light keep-alive client, after a
warm-up; rounds alternate between the servers to cancel drift of the machine, and each server's
figures are taken from its best round. Then 100k rows are scored as one batch
(`ctloop.serving.batch`) and the model time is reported.

Under swaps: `ctloop serve` gets `--swap-requests` (20,000) requests at concurrency 32 from
`httpx.AsyncClient()` with its defaults (pool of 100, 5 s keep-alive expiry, 5 s timeouts, as
a common client is set up), in bursts separated by idle pauses as long as the client's
keep-alive expiry, while the champion is promoted to v2 and rolled back to v1 every 0.25 s
through the admin routes. Every request that fails (an exception or a status other than 200)
counts; the target is none.

Usage, from the repo root:

    python benchmarks/serve.py [--requests 4000] [--concurrency 16] [--rounds 2]
                               [--swap-requests 20000] [--swap-concurrency 32] [--keep]

The last line printed is one JSON object: {"bench": "serve", "ratio": ..., "p99_ms": ...,
"swap_failed": ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ctloop.launcher import free_port

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGET_RATIO = 2.0
TARGET_P99_MS = 25.0
TARGET_BATCH_SECONDS = 1.0
BATCH_ROWS = 100_000
TOKEN = "bench-admin-token"
SWAP_EVERY_SECONDS = 0.25
IDLE_SECONDS = 5.0  # httpx's default keep-alive expiry: the race a 5 s server keep-alive lost


def wait_ready(url: str, proc: subprocess.Popen, seconds: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early: {proc.args}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"server not ready after {seconds} s: {url}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def measure(port: int, path: str, bodies: list[bytes], total: int, concurrency: int) -> dict:
    from ctloop.serving.loadgen import encode_post, percentile, run_load

    encoded = [encode_post("127.0.0.1", port, path, b) for b in bodies]
    start = time.perf_counter()
    replies = asyncio.run(
        run_load("127.0.0.1", port, lambda i: encoded[i % len(encoded)], total, concurrency)
    )
    elapsed = time.perf_counter() - start
    ok = [r.seconds for r in replies if r.status == 200]
    return {
        "requests": total,
        "errors": total - len(ok),
        "rps": round(len(ok) / elapsed, 1),
        "p50_ms": round(percentile(ok, 50) * 1000, 2),
        "p99_ms": round(percentile(ok, 99) * 1000, 2),
    }


async def load_under_swaps(
    base: str, bodies: list[bytes], total: int, concurrency: int, bursts: int = 4
) -> dict:
    """`total` requests at `concurrency` from one default httpx client, in `bursts` with idle
    pauses between them, while another client swaps the champion (v2, then back to v1)."""
    from collections import Counter

    import httpx

    failures: Counter = Counter()
    served: Counter = Counter()
    swaps = {"done": 0, "failed": 0}
    stop = asyncio.Event()

    async def swapper() -> None:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as admin:
            while not stop.is_set():
                for call in (("/admin/promote", {"version": 2}), ("/admin/rollback", None)):
                    answer = await admin.post(call[0], json=call[1])
                    swaps["done" if answer.status_code == 200 else "failed"] += 1
                    try:
                        await asyncio.wait_for(stop.wait(), SWAP_EVERY_SECONDS)
                    except TimeoutError:
                        pass

    async def worker(client: httpx.AsyncClient, indices) -> None:
        for i in indices:
            try:
                answer = await client.post(
                    "/predict",
                    content=bodies[i % len(bodies)],
                    headers={"Content-Type": "application/json"},
                )
            except httpx.HTTPError as exc:
                failures[type(exc).__name__] += 1
                continue
            if answer.status_code != 200:
                failures[f"status {answer.status_code}"] += 1
            else:
                served[answer.headers.get("x-model-version", "?")] += 1

    swapping = asyncio.create_task(swapper())
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base) as client:  # httpx's defaults, on purpose
        per_burst = total // bursts
        for burst in range(bursts):
            if burst:
                await asyncio.sleep(IDLE_SECONDS)
            indices = iter(range(burst * per_burst, (burst + 1) * per_burst))
            await asyncio.gather(*(worker(client, indices) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    stop.set()
    await swapping
    return {
        "swap_requests": per_burst * bursts,
        "swap_concurrency": concurrency,
        "swap_failed": sum(failures.values()),
        "swap_failures": dict(failures),
        "swaps": swaps["done"],
        "swap_admin_failed": swaps["failed"],
        "swap_served_by_version": dict(served),
        "swap_seconds": round(elapsed, 1),
        "swap_client": f"httpx {httpx.__version__} AsyncClient() defaults",
    }


def best(rounds: list[dict]) -> dict:
    return max(rounds, key=lambda r: r["rps"])


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--swap-requests", type=int, default=20_000)
    parser.add_argument("--swap-concurrency", type=int, default=32)
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args()

    import orjson

    from ctloop.config.settings import CONFIG_FILENAME, dump_config
    from ctloop.data.demo import ID, TARGET, TIMESTAMP, demo_config
    from ctloop.registry.store import CHAMPION, open_registry
    from ctloop.serving.batch import score_batch_frame
    from ctloop.serving.sample import demo_frame, register_version

    workdir = Path(tempfile.mkdtemp(prefix="ctloop-bench-serve-"))
    home = workdir / "home"
    procs: list[subprocess.Popen] = []
    try:
        # -- setup (not timed): one registered version, both servers up and warm
        config = demo_config(str(home))
        train = demo_frame(range(4), rows_per_day=600)
        ref = register_version(config, train, alias=CHAMPION)
        register_version(config, train, params={"max_iter": 20})  # v2: the swap target
        dump_config(config, home / CONFIG_FILENAME)
        records = (
            demo_frame([5, 6], rows_per_day=500, seed=99)
            .drop(columns=[TARGET, ID, TIMESTAMP])
            .to_dict(orient="records")
        )
        bindir = Path(sys.executable).parent
        env = {
            **os.environ,
            "CTLOOP_HOME": str(home),
            "MLFLOW_TRACKING_URI": open_registry(config).tracking_uri,
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "CTLOOP_ADMIN_TOKEN": TOKEN,
            # `mlflow models serve` execs `uvicorn` by name: the venv's bin must be on PATH
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        ctloop_port, mlflow_port = free_port(), free_port()
        procs.append(
            subprocess.Popen(
                [str(bindir / "ctloop"), "serve", "--home", str(home), "--port", str(ctloop_port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    str(bindir / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    ref.uri,
                    "--env-manager",
                    "local",
                    "--host",
                    "127.0.0.1",
                    "-p",
                    str(mlflow_port),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_ready(f"http://127.0.0.1:{ctloop_port}/health", procs[0])
        wait_ready(f"http://127.0.0.1:{mlflow_port}/ping", procs[1])

        predict = [orjson.dumps({"records": [r]}) for r in records]
        mlflow_style = [orjson.dumps({"dataframe_records": [r]}) for r in records]
        n, c = args.requests, args.concurrency
        servers = {
            "ctloop_predict": (ctloop_port, "/predict", predict),
            "ctloop_invocations": (ctloop_port, "/invocations", mlflow_style),
            "mlflow": (mlflow_port, "/invocations", mlflow_style),
        }
        for port, path, bodies in servers.values():  # warm-up, not timed
            measure(port, path, bodies, 300, c)

        # -- timed: alternate rounds
        results: dict[str, list[dict]] = {name: [] for name in servers}
        for i in range(args.rounds):
            order = list(servers) if i % 2 == 0 else list(reversed(servers))
            for name in order:
                port, path, bodies = servers[name]
                results[name].append(measure(port, path, bodies, n, c))
        ours, theirs = best(results["ctloop_predict"]), best(results["mlflow"])
        ours_mlflow_api = best(results["ctloop_invocations"])
        swapped = asyncio.run(
            load_under_swaps(
                f"http://127.0.0.1:{ctloop_port}",
                predict,
                args.swap_requests,
                args.swap_concurrency,
            )
        )
        for proc in procs:
            stop(proc)

        # -- batch scoring: 100k rows, model time only
        pipeline = open_registry(config).load(ref)
        rows = demo_frame(range(8, 8 + BATCH_ROWS // 12_500), rows_per_day=12_500, seed=5)
        score_batch_frame(pipeline, ref, rows.head(1000), config)  # warm
        batch = min(
            (score_batch_frame(pipeline, ref, rows, config) for _ in range(3)),
            key=lambda b: b.model_seconds,
        )
        ratio = ours["rps"] / theirs["rps"] if theirs["rps"] else float("inf")
        return {
            "bench": "serve",
            "ratio": round(ratio, 2),
            "target_ratio": TARGET_RATIO,
            "p99_ms": ours["p99_ms"],
            "target_p99_ms": TARGET_P99_MS,
            "p50_ms": ours["p50_ms"],
            "rps": ours["rps"],
            "mlflow_rps": theirs["rps"],
            "mlflow_p50_ms": theirs["p50_ms"],
            "mlflow_p99_ms": theirs["p99_ms"],
            "ratio_invocations": round(ours_mlflow_api["rps"] / theirs["rps"], 2),
            "invocations_p99_ms": ours_mlflow_api["p99_ms"],
            "errors": sum(r["errors"] for rs in results.values() for r in rs),
            "requests_per_round": n,
            "concurrency": c,
            "rounds": results,
            "batch_rows": len(batch.frame),
            "batch_model_seconds": round(batch.model_seconds, 3),
            "target_batch_seconds": TARGET_BATCH_SECONDS,
            "model": f"{ref.uri} ({ref.semver}, {config.training.family})",
            **swapped,
            "target_swap_failed": 0,
            "cpus": os.cpu_count(),
            "passed": bool(
                ratio >= TARGET_RATIO
                and ours["p99_ms"] <= TARGET_P99_MS
                and batch.model_seconds <= TARGET_BATCH_SECONDS
                and swapped["swap_failed"] == 0
            ),
        }
    finally:
        for proc in procs:
            stop(proc)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}", file=sys.stderr)


if __name__ == "__main__":
    print(json.dumps(main()))
