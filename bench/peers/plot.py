"""Plots of a bench/compare.py result (run with bench/.peers, which has matplotlib).

python bench/peers/plot.py RESULT.json OUTDIR
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main() -> int:
    result = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    systems = list(result["systems"])
    summary = result["summary"]

    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.38
    for i, (key, label) in enumerate(
        [("drain_1", "1 worker process"), ("drain_2", "2 worker processes")]
    ):
        values = [summary[s][key]["median"] for s in systems]
        xs = [x + (i - 0.5) * width for x in range(len(systems))]
        bars = ax.bar(xs, values, width, label=label)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(range(len(systems)), systems)
    ax.set_ylabel("jobs/s (median)")
    ax.set_title(f"Drain of {result['jobs']:,} no-op jobs, by worker processes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "compare-drain.png", dpi=110)

    deep = [s for s in systems if summary[s].get("drain_depth")]
    if deep:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for i, (key, label) in enumerate(
            [("drain_2", "empty table"), ("drain_depth", f"{result['depth']:,} jobs due tomorrow")]
        ):
            values = [summary[s][key]["median"] for s in deep]
            xs = [x + (i - 0.5) * width for x in range(len(deep))]
            bars = ax.bar(xs, values, width, label=label)
            ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_xticks(range(len(deep)), deep)
        ax.set_ylabel("jobs/s (median), 2 worker processes")
        ax.set_title("Drain rate against queue depth (statistics not refreshed)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "compare-depth.png", dpi=110)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    data = [result["latencies"][s] for s in systems]
    ax.boxplot(data, tick_labels=systems, showfliers=False)
    ax.set_yscale("log")
    ax.set_ylabel("enqueue-to-start latency, ms (log scale)")
    ax.set_title("Latency on an idle worker (all samples of all runs)")
    fig.tight_layout()
    fig.savefig(out / "compare-latency.png", dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
