"""The replay's report: the metric over time per policy as a PNG, and a self-contained HTML page
(matplotlib is imported only when a plot is drawn)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from ctloop.loop.replay.results import ReplayResult


def plot_replay(result: ReplayResult, path: Path) -> Path:
    """Metric over time per policy, with a marker at each retrain; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 5))
    for name, policy in result.policies.items():
        xs = list(range(len(policy.points)))
        ys = [np.nan if p.metric is None else p.metric for p in policy.points]
        (line,) = ax.plot(xs, ys, label=f"{name} ({policy.retrains} retrains)", linewidth=1.6)
        marks = [x for x, p in zip(xs, policy.points, strict=True) if p.retrained]
        mark_y = [ys[x] if not np.isnan(ys[x]) else np.nanmin(ys) for x in marks]
        ax.scatter(marks, mark_y, color=line.get_color(), marker="v", s=36, zorder=3)
        estimates = [np.nan if p.estimate is None else p.estimate for p in policy.points]
        if result.estimate_metric == result.metric_name and not np.isnan(estimates).all():
            label = f"{name}: its estimate before the labels"
            ax.plot(xs, estimates, ":", color=line.get_color(), linewidth=1.2, label=label)
    ax.set_xlabel("batch")
    ax.set_ylabel(f"served {result.metric_name} (prequential)")
    ax.set_title("ctloop replay: metric of the serving model per batch; ▼ = retrain")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def report_html(result: ReplayResult, png: Path, path: Path) -> Path:
    """A self-contained HTML report: the summary table, the plot, the per-batch notes."""
    image = base64.b64encode(png.read_bytes()).decode()

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{fmt(p.mean_metric)}</td><td>{p.retrains}</td>"
        f"<td>{p.seconds:.1f}</td><td>{fmt(p.regret)}</td></tr>"
        for n, p in result.policies.items()
    )
    summary = result.as_json()
    summary.pop("per_batch")
    oracle = ""
    if result.oracle is not None:
        best = result.oracle.summary()
        rows += (
            f"<tr><td><i>oracle</i></td><td>{fmt(best['mean_metric'])}</td>"
            f"<td>{best['retrains']}</td><td>{best['seconds']:.1f}</td>"
            f"<td>{fmt(best['regret'])}</td></tr>"
        )
        oracle = (
            f"<p>Regret = {best['cost_in_metric_units']:.4g} (triggers.retrain_cost "
            f"{best['retrain_cost']:g}) x retrains + the {html.escape(result.metric_name)} "
            "lost against the oracle, summed over the scored batches. The oracle is the "
            "hindsight-optimal schedule of the same fits (the rule's window at each batch, "
            f"and the {best['policy_fits']} other models the policies fitted, "
            f"{best['policy_fits_installed']} of them installed); it retrains after "
            f"{html.escape(', '.join(best['retrain_after']))}.</p>"
        )
    notes = ""
    for name, policy in result.policies.items():
        items = "".join(
            f"<li>{html.escape(p.batch)}: {'' if p.metric is None else f'{p.metric:.4f}'} "
            f"{'' if p.estimate is None else f'(estimated {p.estimate:.4f}) '}"
            f"{'<b>retrain</b> ' if p.retrained else ''}{html.escape(p.note)}</li>"
            for p in policy.points
            if p.retrained or p.note or p.estimate is not None
        )
        notes += f"<h3>{html.escape(name)}</h3><ul>{items}</ul>"
    body = (
        "<html><head><meta charset='utf-8'><title>ctloop replay</title></head><body>"
        f"<h1>ctloop replay: {result.batches} batches</h1>"
        f"<table border='1' cellpadding='4'><tr><th>policy</th><th>mean {result.metric_name}"
        f"</th><th>retrains</th><th>compute s</th><th>regret</th></tr>{rows}</table>"
        f"{oracle}<p><img src='data:image/png;base64,{image}'/></p>{notes}"
        f"<pre>{html.escape(json.dumps(summary, indent=2))}</pre>"
        "</body></html>"
    )
    path.write_text(body)
    return path
