"""PNG plots of ``streams.bench``'s sections, from the numbers the same run measured.

Each ``render_<section>`` takes the section's figure data (``_Stack.figures``) and writes one
PNG; ``render`` picks the function by name and returns the path, or None for a section
without a plot (the profile is a table) or when matplotlib is missing.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["render"]


def render(name: str, data: dict, folder: Path) -> Path | None:
    draw = globals().get(f"_draw_{name}")
    if draw is None:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig = plt.figure(figsize=(7.5, 4.0), dpi=100)
    try:
        draw(fig, data)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def _draw_inference(fig, data: dict) -> None:
    rows = data["rows"]
    batches = [r["batch"] for r in rows]
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(batches, [r["texts_per_s"] for r in rows], "o-", color="tab:blue", label="texts/s")
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("texts per request (batch size)")
    ax.set_ylabel("texts/s", color="tab:blue")
    ax.set_ylim(bottom=0)
    right = ax.twinx()
    right.plot(batches, [r["p50_ms"] for r in rows], "s--", color="tab:red", label="request p50")
    right.set_ylabel("request p50 (ms)", color="tab:red")
    right.set_ylim(bottom=0)
    ax.set_title("Triton text_analysis on CPU: throughput and latency by batch size")


def _draw_text(fig, data: dict) -> None:
    rates = data["rates"]
    ax = fig.add_subplot(1, 1, 1)
    workers = sorted(rates)
    ax.bar([str(w) for w in workers], [rates[w] for w in workers], color="tab:blue",
           label="reviews/s end to end")
    ax.axhline(data["ceiling"], color="tab:red", linestyle="--", label="Triton ceiling (same run)")
    for i, w in enumerate(workers):
        ax.annotate(f"{rates[w] / data['ceiling']:.2f}", (i, rates[w]), ha="center", va="bottom")
    ax.set_xlabel("workers")
    ax.set_ylabel("reviews/s")
    ax.legend(loc="lower right")
    ax.set_title("Text path at saturation against the inference ceiling")


def _draw_latency(fig, data: dict) -> None:
    rows = data["rows"]
    offered = [r["offered"] for r in rows]
    ax = fig.add_subplot(1, 1, 1)
    for key, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
        ax.plot(offered, [1000 * r[key] for r in rows], style, label=key)
    ax.set_xlabel("reviews/s offered (one worker)")
    ax.set_ylabel("end-to-end latency (ms)")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("End-to-end latency by load")


def _draw_clicks(fig, data: dict) -> None:
    rates = data["rates"]
    names = {"bare": "bare loop", "quix": "Quix Streams", "faust": "minimal Faust",
             "streamsense-1": "StreamSense\n1 worker", "streamsense-2": "StreamSense\n2 workers"}
    keys = [k for k in names if k in rates]
    ax = fig.add_subplot(1, 1, 1)
    ax.bar([names[k] for k in keys], [rates[k] for k in keys],
           color=["tab:blue" if k.startswith("streamsense") else "tab:gray" for k in keys])
    for i, k in enumerate(keys):
        ax.annotate(f"{rates[k] / rates['bare']:.2f}", (i, rates[k]), ha="center", va="bottom")
    ax.set_ylabel("output records/s (x bare loop above each bar)")
    ax.set_title("Clicks: StreamSense's full path next to peers doing plain state")


def _draw_commits(fig, data: dict) -> None:
    rows = data["rows"]
    labels = [f"{'exactly' if r['guarantee'] == 'exactly_once' else 'at least'} once\n"
              f"commit {r['interval']:g} s" for r in rows]
    ax = fig.add_subplot(1, 1, 1)
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [1000 * r["p50"] for r in rows], width=0.4, label="p50")
    ax.bar([i + 0.2 for i in x], [1000 * r["p99"] for r in rows], width=0.4, label="p99")
    for i, r in enumerate(rows):
        ax.annotate(f"{r['saturated']:,.0f}/s", (i, 1000 * r["p99"]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("click -> recommendation visible (ms)")
    ax.legend()
    ax.set_title("Latency a read_committed consumer sees (clicks/s at saturation above)")


def _draw_soak(fig, data: dict) -> None:
    ax = fig.add_subplot(1, 1, 1)
    offset = 0
    for phase in dict.fromkeys(r[0] for r in data["rows"] if r[0] != "start"):
        rows = [r for r in data["rows"] if r[0] == phase]
        ax.plot([offset + r[1] for r in rows], [r[-1] for r in rows], "o-", label=phase)
        offset += rows[-1][1]
    start = [r for r in data["rows"] if r[0] == "start"]
    if start:
        ax.axhline(start[0][-1], color="tab:gray", linestyle=":", label="at start")
    ax.set_xlabel("events processed")
    ax.set_ylabel("worker RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title("One worker's memory over per-key state")


def _draw_adapter(fig, data: dict) -> None:
    sets = data["sets"]
    fig.set_size_inches(3.75 * max(2, len(sets)), 4.0)  # one panel per set, each as wide as two would be
    for k, (title, curves) in enumerate(sets.items()):
        ax = fig.add_subplot(1, len(sets), k + 1)
        for name, rolling in curves.items():
            ax.plot(range(1, len(rolling) + 1), rolling, label=name,
                    linewidth=2.2 if name == "served" else 1.2)
        ax.axhline(0.8, color="grey", linestyle=":", label="target 0.80")
        ax.set_xlabel("polar rated texts streamed")
        ax.set_ylabel("polar accuracy, last 200")
        ax.set_ylim(0.3, 1.0)
        ax.legend(loc="lower right", fontsize=7)
        ax.set_title(title, fontsize=9)
