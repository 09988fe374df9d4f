"""Retake the README's four screenshots of the UIs after the demo (a dev tool, not a test).

    .venv/bin/python docs/screenshots.py                 # demo home in a temporary folder
    .venv/bin/python docs/screenshots.py --home .ctloop  # reuse a home the demo filled

Builds a demo home (`ctloop demo --fresh` in a temporary folder, or reuses `--home`), starts
`ctloop ui` on it on free ports, waits until every server answers, then finds through the REST
APIs the MLflow training run of the champion (when a drift retrain made it; else the newest
registered version's run with trigger `drift`), its Prefect flow run (the run's
`ctloop.prefect_flow_run` tag; else the newest Completed `retrain-drift` run) and its Optuna
study (the `ctloop.tuning_study` tag). Takes each page with headless chromium, 1400x1000:

    prefect-retrain-run.png   the retrain flow run page with all its logs (the page's full
                              height: the decision is the second line, the blessing and the
                              MLflow run the last ones)
    prefect-deployments.png   the deployments page
    mlflow-run.png            the MLflow run page (the model-training view, as `ctloop ui`
                              prints it), the assistant's panel closed, the description unfolded
    optuna-dashboard.png      the optuna-dashboard study page

Chromium is driven over the DevTools protocol (with `websockets`, installed with Prefect): each
page is taken once it shows what it should (the run's last log line, every deployment Ready,
the run's tags, the metric's name on the history axis), else taken anyway and named at the end
(exit 1). `--plain` uses `chromium --screenshot --virtual-time-budget` instead. Then prints what
each page should show, read from the APIs, to check the PNGs against. Stops everything it
started; the temporary folder is removed unless `--keep`. No dependency beyond the dev install
and Debian's `chromium` (`apt-get install chromium`).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
WINDOW = "1400,1000"
UI_TIMEOUT_S = 600  # `ctloop ui` on a loaded 2-core machine takes a minute or two
TRIGGER_TAG = "ctloop.trigger"
FLOW_RUN_TAG = "ctloop.prefect_flow_run"
RUN_URL_TAG = "ctloop.prefect_flow_run_url"
STUDY_TAG = "ctloop.tuning_study"


def ctloop_bin() -> str:
    for candidate in (Path(sys.executable).parent / "ctloop", ROOT / ".venv" / "bin" / "ctloop"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("ctloop")
    if not found:
        sys.exit("ctloop not found: run `make .venv/.installed` and use .venv/bin/python")
    return found


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def environment(home: Path) -> dict[str, str]:
    """The children's environment: this home only, no other server, no telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CTLOOP_"))}
    env.update(
        CTLOOP_HOME=str(home),
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        COLUMNS="200",  # rich prints each URL of `ctloop ui` on one line
    )
    return env


def http_json(url: str, body: dict | None = None, timeout: float = 30) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status < 500
    except (urllib.error.URLError, OSError):
        return False


def build_demo(ctloop: str, home: Path, env: dict, trials: int | None) -> None:
    cmd = [ctloop, "demo", "--fresh", "--home", str(home)]
    if trials is not None:
        cmd += ["--trials", str(trials)]
    print(f"demo: {' '.join(cmd)}", flush=True)
    log = home.parent / "demo.log"
    with log.open("wb") as out:
        code = subprocess.call(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"ctloop demo exited with {code}; see {log}:\n{log.read_text()[-3000:]}")


class UI:
    """`ctloop ui` on free ports, in its own process group; `urls` once every server answers."""

    def __init__(self, ctloop: str, home: Path, env: dict, log: Path):
        self.prefect_port, self.mlflow_port, self.optuna_port = free_ports(3)
        self.log = log
        self.cmd = [ctloop, "ui", "--home", str(home), "--prefect-port", str(self.prefect_port),
                    "--mlflow-port", str(self.mlflow_port),
                    "--optuna-port", str(self.optuna_port)]  # fmt: skip
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.urls: dict[str, str] = {}

    def start(self) -> None:
        print(f"ui: {' '.join(self.cmd)}", flush=True)
        self._out = self.log.open("wb")
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, stdout=self._out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def wait(self, timeout: float = UI_TIMEOUT_S) -> dict[str, str]:
        """Until `ctloop ui` says the UIs answer (deployments served too) and each URL answers."""
        base = f"http://127.0.0.1:{self.prefect_port}"
        checks = {
            "Prefect API": f"{base}/api/health",
            "Prefect UI": f"{base}/",
            "MLflow": f"http://127.0.0.1:{self.mlflow_port}/health",
            "Optuna dashboard": f"http://127.0.0.1:{self.optuna_port}/api/meta",
        }
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"ctloop ui exited with {self.proc.returncode}:\n{self._tail()}")
            text = self.log.read_text(errors="replace")
            if "the UIs answer" in text and all(answers(u) for u in checks.values()):
                # "name: url" lines (a narrow console may wrap a long URL onto the next line)
                for m in re.finditer(r"^\s*([\w ]+?):\s+(http\S+)", text, re.MULTILINE):
                    self.urls[m.group(1)] = m.group(2)
                return self.urls
            time.sleep(2)
        sys.exit(f"the UIs did not answer within {timeout:.0f} s:\n{self._tail()}")

    def _tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def descendants(self) -> list[int]:
        """Every process below `ctloop ui` (its children may have sessions of their own)."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        found, todo = [], [self.proc.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found.append(child)
                todo.append(child)
        return found

    def stop(self) -> None:
        """SIGTERM to `ctloop ui` (it stops its children); then any of them still there, by id."""
        if self.proc is None:
            return
        below = self.descendants()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + 15  # a child's own children may take a moment to go
        while any(alive(pid) for pid in below) and time.monotonic() < deadline:
            time.sleep(0.5)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = {pid: command(pid) for pid in below if alive(pid)}
            if not left:
                break
            print(f"warning: ctloop ui left {left}; sending {sig.name}", flush=True)
            for pid in left:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(5)
        self._out.close()


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- finding the pages -------------------------------------------------------------------------


def tags_of(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def mlflow_run(mlflow: str, experiment_id: str) -> dict:
    """The champion's training run when a drift retrain made it; else the newest registered
    version's run with trigger `drift`; else the newest version's. The run (`info`, `data`)
    with `version` (number, model, aliases) added."""
    api = f"{mlflow}/api/2.0/mlflow"
    found = http_json(f"{api}/registered-models/search?max_results=100")
    versions = []
    for model in found.get("registered_models", []):
        name = model["name"]
        query = urllib.parse.urlencode({"filter": f"name='{name}'", "max_results": 1000})
        listed = http_json(f"{api}/model-versions/search?{query}").get("model_versions", [])
        try:
            query = urllib.parse.urlencode({"name": name, "alias": "champion"})
            champion = http_json(f"{api}/registered-models/alias?{query}")["model_version"]
        except urllib.error.HTTPError:
            champion = {}
        for v in listed:
            v["champion"] = v["version"] == champion.get("version")
        versions += listed
    if not versions:
        sys.exit("no registered model version in MLflow: did the demo train?")
    # the champion first, then the newest
    versions.sort(key=lambda v: (not v["champion"], -int(v["version"])))
    runs = []
    for v in versions:
        run = http_json(f"{api}/runs/get?run_id={v['run_id']}")["run"]
        run["version"] = v
        if run["info"]["experiment_id"] == experiment_id:
            runs.append(run)
    for run in runs:
        if tags_of(run).get(TRIGGER_TAG) == "drift":
            return run
    return (runs or [run])[0]


def prefect_run(api: str, flow_run_id: str | None) -> dict:
    """The flow run the MLflow run names; else the newest Completed `retrain-drift` run."""
    if flow_run_id:
        try:
            return http_json(f"{api}/flow_runs/{flow_run_id}")
        except urllib.error.HTTPError as e:
            print(f"warning: flow run {flow_run_id} of the MLflow run: HTTP {e.code}")
    found = http_json(
        f"{api}/flow_runs/filter",
        {"flow_runs": {"name": {"any_": ["retrain-drift"]},
                       "state": {"type": {"any_": ["COMPLETED"]}, "name": {"any_": ["Completed"]}}},
         "sort": "START_TIME_DESC", "limit": 1},
    )  # fmt: skip
    if not found:
        sys.exit("no Completed retrain-drift flow run in Prefect")
    return found[0]


def flow_run_logs(api: str, flow_run_id: str) -> list[dict]:
    return http_json(
        f"{api}/logs/filter",
        {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200},
    )


def optuna_study(dashboard: str, study_name: str | None) -> dict:
    """The study the MLflow run names (else the newest), with its trials."""
    studies = http_json(f"{dashboard}/api/studies")["study_summaries"]
    if not studies:
        sys.exit("no Optuna study: did the demo tune (--trials > 0)?")
    chosen = next((s for s in studies if s["study_name"] == study_name), studies[-1])
    study = http_json(f"{dashboard}/api/studies/{chosen['study_id']}?after=0")
    return {**study, "study_id": chosen["study_id"]}


# --- taking them ------------------------------------------------------------------------------


def chromium_bin() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    sys.exit("chromium not found: apt-get install -y chromium")


def js(value: object) -> str:
    return json.dumps(value)


class Shot:
    """One page: `ready` is a JS expression true once it has rendered what it should show;
    `action` runs then (a click a person would make); `bottom`, a text the page ends with: the
    window grows to the page's full height until that text is in it."""

    def __init__(self, name: str, url: str, ready: str, action: str = "", bottom: str = ""):
        self.name, self.url, self.ready, self.action, self.bottom = name, url, ready, action, bottom


class Browser:
    """Headless chromium driven over the DevTools protocol (with `websockets`, which Prefect
    installs): each page is taken once it shows what it should, not after a fixed time."""

    def __init__(self, chromium: str, profile: Path, timeout: float):
        from websockets.sync.client import connect

        self.timeout = timeout
        self.proc = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for line in self.proc.stderr:
            if m := re.search(r"DevTools listening on ws://[\d.]+:(\d+)/", line):
                break
        else:
            sys.exit(f"chromium exited with {self.proc.wait()} before listening")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # drain it
        port = m.group(1)
        pages = http_json(f"http://127.0.0.1:{port}/json/list")
        page = next(p for p in pages if p["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.ids = 0

    def call(self, method: str, **params) -> dict:
        self.ids += 1
        self.ws.send(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:  # events in between are skipped
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.ids:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def eval(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def until(self, expression: str) -> bool:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.eval(
                f"(() => {{ try {{ return !!({expression}) }} catch {{ return false }} }})()"
            ):
                return True
            time.sleep(0.5)
        return False

    def take(self, shot: Shot, out: Path) -> bool:
        """The page into `out`; False when it never showed what it should (taken anyway)."""
        width, height = (int(x) for x in WINDOW.split(","))
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip
        self.call("Page.navigate", url=shot.url)
        ready = self.until(shot.ready)
        if shot.action:
            self.eval(shot.action)
            time.sleep(1)
            ready = self.until(shot.ready) and ready
        # the app scrolls inside an element: grow the window to its height, until it stays
        # (Prefect's log list renders its rows as they come into view, taller than estimated)
        in_window = f"({IN_WINDOW})({js(shot.bottom)})"
        for _ in range(8 if shot.bottom else 0):
            full = min(max(height, int(self.eval(FULL_HEIGHT) or height)), 8000)
            if full == height and self.eval(in_window):
                break
            height = full
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                      deviceScaleFactor=1, mobile=False)  # fmt: skip
            time.sleep(1.5)
        if shot.bottom and not self.eval(in_window):
            ready = False
        time.sleep(SETTLE_S)  # charts animate, fonts swap
        data = self.call("Page.captureScreenshot", format="png")["data"]
        out.write_bytes(base64.b64decode(data))
        return ready

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class PlainChromium:
    """`chromium --screenshot` with a virtual time budget: no waiting on what a page shows and
    no clicks (the fallback when `websockets` is missing, or with --plain)."""

    def __init__(self, chromium: str, profile: Path, budget_ms: int):
        self.chromium, self.profile, self.budget_ms = chromium, profile, budget_ms

    def take(self, shot: Shot, out: Path) -> bool:
        out.unlink(missing_ok=True)
        cmd = [self.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
               f"--virtual-time-budget={self.budget_ms}", f"--screenshot={out}",
               shot.url]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if result.returncode or not out.exists():
            error = result.stderr[-2000:]
            sys.exit(f"chromium failed on {shot.url} ({result.returncode}):\n{error}")
        return True

    def close(self) -> None:
        pass


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
    "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
    "--disable-component-update", "--force-device-scale-factor=1", f"--window-size={WINDOW}",
]  # fmt: skip
SETTLE_S = 2.0
MLFLOW_ASSISTANT_CLOSE = '[data-component-id="mlflow.assistant.chat_panel.close"]'
# the tallest scrolling area of the page (Prefect's and MLflow's apps scroll inside a div)
FULL_HEIGHT = """Math.max(document.documentElement.scrollHeight,
  ...[...document.querySelectorAll('*')]
  .filter(e => e.scrollHeight > e.clientHeight && getComputedStyle(e).overflowY !== 'visible')
  .map(e => e.scrollHeight + e.getBoundingClientRect().top))"""
# a text in the window: the innermost element holding it ends above the window's bottom
IN_WINDOW = """text => [...document.querySelectorAll('body *')].some(e =>
  e.textContent.includes(text) && ![...e.children].some(c => c.textContent.includes(text))
  && e.getBoundingClientRect().height > 0 && e.getBoundingClientRect().bottom <= innerHeight)"""


def text_shown(*texts: str) -> str:
    return " && ".join(f"document.body.innerText.includes({js(t)})" for t in texts)


def shots(prefect: str, mlflow: str, dashboard: str, query: str, flow: dict, logs: list,
          deps: list, run: dict, study: dict) -> list[Shot]:  # fmt: skip
    flow_lines = [log["message"] for log in logs if log.get("task_run_id") is None]
    last = flow_lines[-2] if len(flow_lines) > 1 else flow["name"]  # the last before "Finished"
    info = run["info"]
    metric = (study.get("objective_names") or [None])[0] or "Objective 0"
    return [
        Shot("prefect-retrain-run.png", f"{prefect}/runs/flow-run/{flow['id']}",
             text_shown(flow["name"], last[:60]) + " && document.querySelector('canvas')",
             bottom=last[:60]),
        Shot("prefect-deployments.png", f"{prefect}/deployments",
             text_shown(f"{len(deps)} Deployment", *(d["name"] for d in deps))
             + f" && document.body.innerText.split('Ready').length > {len(deps)}"),
        Shot("mlflow-run.png",
             f"{mlflow}/#/experiments/{info['experiment_id']}/runs/{info['run_id']}{query}",
             text_shown(info["run_name"], "Description", "Tags", TRIGGER_TAG),
             # the assistant's panel takes a quarter of the width; the description is folded
             f"document.querySelector({js(MLFLOW_ASSISTANT_CLOSE)})?.click();"
             " [...document.querySelectorAll('button, a, span')]"
             ".find(e => e.textContent.trim() === 'Show more')?.click()"),
        Shot("optuna-dashboard.png", f"{dashboard}/dashboard/studies/{study['study_id']}",
             f"[...document.querySelectorAll('svg text')].some(t => t.textContent === {js(metric)})"
             " && document.querySelectorAll('.point, .scatterpts path').length > 0"),
    ]  # fmt: skip


def report(flow: dict, logs: list, deps: list, run: dict, study: dict) -> None:
    """What each page should show, read from the APIs, to check the PNGs against."""
    state = flow.get("state") or {}
    print(f"  {flow['name']} ({flow['id']}): {state.get('name')}"
          + (f" ({state['message']})" if state.get("message") else ""))  # fmt: skip
    for log in logs:
        if log.get("task_run_id") is None or not log["message"].startswith("Finished in"):
            print(f"    log: {log['message'][:150]}")
    for d in deps:
        schedules = [s["schedule"] for s in d.get("schedules", [])]
        shown = [str(s.get("cron") or s.get("interval") or s.get("rrule")) for s in schedules]
        print(f"  deployment {d['name']}: {d.get('status')}, schedules {shown}")
    info, version, tags = run["info"], run["version"], tags_of(run)
    champion = ", champion" if version.get("champion") else ""
    print(f"  MLflow run {info['run_name']} ({info['run_id']}): {version['name']} "
          f"version {version['version']}{champion}")  # fmt: skip
    for key in (TRIGGER_TAG, FLOW_RUN_TAG, RUN_URL_TAG, STUDY_TAG):
        print(f"    {key}: {tags.get(key)}")
    note = tags.get("mlflow.note.content", "")
    print(f"    description: {' | '.join(note.splitlines()[-2:])[:160]}")
    trials = study.get("trials", [])
    states = {}
    for t in trials:
        states[t["state"]] = states.get(t["state"], 0) + 1
    print(f"  Optuna study {study['name']} (id {study['study_id']}): {len(trials)} trials "
          f"{states}, objective {study.get('objective_names')}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a home the demo filled (default: a fresh one)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder of the PNGs ({OUT})")
    parser.add_argument("--trials", type=int, help="Optuna trials per retrain of the demo")
    parser.add_argument("--timeout", type=float, default=60, help="seconds a page may take")
    parser.add_argument("--plain", action="store_true", help="chromium --screenshot only")
    parser.add_argument("--budget-ms", type=int, default=15000, help="--plain's virtual time")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    started = time.monotonic()
    chromium = chromium_bin()
    ctloop = ctloop_bin()
    work = Path(tempfile.mkdtemp(prefix="ctloop-shots-"))
    home = args.home.resolve() if args.home else work / "home"
    env = environment(home)
    ui = UI(ctloop, home, env, work / "ui.log")
    browser = None
    failed = []
    try:
        if not args.home:
            build_demo(ctloop, home, env, args.trials)
            print(f"demo: {time.monotonic() - started:.0f} s", flush=True)
        ui.start()
        urls = ui.wait()
        print(f"ui answers: {time.monotonic() - started:.0f} s", flush=True)
        prefect = f"http://127.0.0.1:{ui.prefect_port}"
        mlflow = f"http://127.0.0.1:{ui.mlflow_port}"
        dashboard = f"http://127.0.0.1:{ui.optuna_port}"
        m = re.search(r"#/experiments/(\w+)(\?\S*)?", urls.get("MLflow UI", ""))
        if not m:
            sys.exit(f"no MLflow experiment URL in what ctloop ui printed: {urls}")
        experiment_id, query = m.group(1), m.group(2) or ""

        run = mlflow_run(mlflow, experiment_id)
        tags = tags_of(run)
        flow = prefect_run(f"{prefect}/api", tags.get(FLOW_RUN_TAG))
        logs = flow_run_logs(f"{prefect}/api", flow["id"])
        study = optuna_study(dashboard, tags.get(STUDY_TAG))
        deps = http_json(f"{prefect}/api/deployments/filter", {"sort": "NAME_ASC", "limit": 50})

        args.out.mkdir(parents=True, exist_ok=True)
        if args.plain:
            browser = PlainChromium(chromium, work / "chromium", args.budget_ms)
        else:
            try:
                browser = Browser(chromium, work / "chromium", args.timeout)
            except ImportError:
                print("websockets missing: chromium --screenshot with a virtual time budget")
                browser = PlainChromium(chromium, work / "chromium", args.budget_ms)
        for shot in shots(prefect, mlflow, dashboard, query, flow, logs, deps, run, study):
            begun = time.monotonic()
            ready = browser.take(shot, args.out / shot.name)
            if not ready:
                failed.append(shot.name)
            print(f"{shot.name}: {shot.url} ({time.monotonic() - begun:.0f} s"
                  + ("" if ready else "; NOT what it should show, taken anyway") + ")",
                  flush=True)  # fmt: skip
        print("\nwhat the pages should show (from the APIs):")
        report(flow, logs, deps, run, study)
    finally:
        if browser:
            browser.close()
        ui.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"done in {time.monotonic() - started:.0f} s")
    if failed:
        sys.exit(f"pages that did not show what they should: {', '.join(failed)}")


if __name__ == "__main__":
    main()
