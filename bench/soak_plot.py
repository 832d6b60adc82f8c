"""The plot of a soak run (bench/soak.py): pickup latency and the rate achieved, table and
index sizes, dead tuples and autovacuum runs, the pages the claim's index walk touches and
the machine's load, worker memory, minute by minute (matplotlib, the ``bench`` extra)."""

from pathlib import Path

TABLES = ("asyncjobs_job", "asyncjobs_attempt")


def plot(result: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib is missing (pip install 'django-asyncjobs[bench]'): no plot")
        return
    samples = result["samples"]
    minutes = [s["minute"] for s in samples]
    fig, axes = plt.subplots(5, 1, figsize=(8, 12), sharex=True)
    ax = axes[0]
    ax.plot(minutes, [s["p50_ms"] for s in samples], label="p50")
    ax.plot(minutes, [s["p95_ms"] for s in samples], label="p95")
    ax.set_yscale("log")  # a surge's queueing is orders above the steady figures
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_ylabel("pickup latency (ms)")
    ax.legend(loc="upper left")
    twin = ax.twinx()
    twin.plot(minutes, [s["enqueued_rate"] for s in samples], color="grey", ls=":")
    twin.set_ylabel("enqueued/s (dotted)")
    twin.set_ylim(bottom=0)
    ax = axes[1]
    for table in TABLES:
        short = table.removeprefix("asyncjobs_")
        ax.plot(minutes, [s["tables"][table]["table_mib"] for s in samples], label=f"{short} table")
        ax.plot(
            minutes, [s["tables"][table]["index_mib"] for s in samples], label=f"{short} indexes"
        )
    ax.set_ylabel("size (MiB)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize="small")
    ax = axes[2]
    for table in TABLES:
        short = table.removeprefix("asyncjobs_")
        ax.plot(
            minutes, [s["tables"][table]["dead"] for s in samples], label=f"{short} dead tuples"
        )
    ax.set_ylabel("dead tuples")
    ax.legend(loc="upper left", fontsize="small")
    twin = ax.twinx()
    twin.step(
        minutes,
        [s["tables"]["asyncjobs_job"]["autovacuums"] for s in samples],
        color="grey",
        where="post",
    )
    twin.set_ylabel("job autovacuums (grey)")
    ax = axes[3]
    if any("claim_pages" in s for s in samples):
        ax.plot(minutes, [s.get("claim_pages") for s in samples], label="claim index walk")
        ax.legend(loc="upper left")
    ax.set_ylabel("pages touched")
    ax.set_ylim(bottom=0)
    twin = ax.twinx()
    twin.plot(minutes, [s.get("load") for s in samples], color="grey", ls=":")
    twin.set_ylabel("load average (dotted)")
    twin.set_ylim(bottom=0)
    ax = axes[4]
    for i in range(len(samples[0]["rss_mib"]) if samples else 0):
        ax.plot(minutes, [s["rss_mib"][i] for s in samples], label=f"worker {i + 1}")
    ax.set_ylabel("worker RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("minute")
    ax.legend(loc="lower right")
    surge = [s["minute"] for s in samples if s["phase"] == "surge"]
    for ax in axes:
        if surge:
            ax.axvspan(min(surge) - 1, max(surge), color="orange", alpha=0.1, lw=0)
    settings = result["settings"]
    fig.suptitle(
        f"asyncjobs soak: {settings['rate']:g} jobs/s target, {settings['workers']} workers,"
        f" PostgreSQL {result['postgresql'] // 10000}, {result['when'][:10]}"
        f" ({settings['surge_factor']:g}x surge shaded)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    print(f"plot: {path}")
