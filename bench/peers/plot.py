"""Plots of a bench/compare.py result (run with bench/.peers, which has matplotlib).

python bench/peers/plot.py RESULT.json OUTDIR
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def paired_bars(
    path: Path, summary: dict, systems: list[str], series: list[tuple[str, str]], title: str
) -> None:
    """Two bars per system (the medians of two workloads), labelled, saved to ``path``."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.38
    for i, (key, label) in enumerate(series):
        values = [summary[s][key]["median"] for s in systems]
        xs = [x + (i - 0.5) * width for x in range(len(systems))]
        bars = ax.bar(xs, values, width, label=label)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(range(len(systems)), systems)
    ax.set_ylabel("jobs/s (median)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    result = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    systems = list(result["systems"])
    summary = result["summary"]

    drained = [s for s in systems if summary[s].get("drain_1") and summary[s].get("drain_2")]
    paired_bars(
        out / "compare-drain.png",
        summary,
        drained,
        [("drain_1", "1 worker process"), ("drain_2", "2 worker processes")],
        f"Drain of {result['jobs']:,} no-op jobs, by worker processes",
    )
    deep = [s for s in systems if summary[s].get("drain_depth")]
    if deep:
        paired_bars(
            out / "compare-depth.png",
            summary,
            deep,
            [("drain_2", "empty table"), ("drain_depth", f"{result['depth']:,} jobs due tomorrow")],
            "Drain with 2 worker processes against queue depth (statistics not refreshed)",
        )

    fig, ax = plt.subplots(figsize=(8, 4.5))
    timed = [s for s in systems if result["latencies"].get(s)]
    ax.boxplot([result["latencies"][s] for s in timed], tick_labels=timed, showfliers=False)
    ax.set_yscale("log")
    ax.set_ylabel("enqueue-to-start latency, ms (log scale)")
    ax.set_title("Latency on an idle worker (all samples of all runs)")
    fig.tight_layout()
    fig.savefig(out / "compare-latency.png", dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
