"""Section ``store``: the full click path with the partitioned tables in memory and in RocksDB
(``STREAMSENSE_TABLE_STORE``), one worker, alternated in one run so that the machine's drift
falls on both alike."""

from __future__ import annotations

import statistics

from streams.bench.clicks import click_values, streamsense_clicks
from streams.bench.harness import Stack

__all__ = ["stores"]

STORES = ("memory", "rocksdb")


def stores(stack: Stack, n: int, *, rounds: int = 2) -> str:
    values = click_values(n)
    runs: dict[str, list[tuple[float, float, float]]] = {store: [] for store in STORES}
    for round_ in range(rounds):
        for store in STORES if round_ % 2 == 0 else reversed(STORES):
            out, _, taken, rss = streamsense_clicks(stack, values, 1, store=store, tag=f"{store[0]}{round_}")
            runs[store].append((out, taken, rss))
    stack.figures["store"] = {"runs": runs}
    lines = [f"{len(values):,} simulated click events into one worker (4 partitions), the click users "
             f"and click models in each store; {rounds} runs each, alternated (memory first, then "
             "RocksDB first). Each run has its own topics and group, so its tables start empty.",
             "", "| store | recommendations/s (each run) | clicks/s taken (each run) | worker RSS at the end "
             "(MiB) |", "|---|---|---|---|"]
    for store, got in runs.items():
        out, taken, rss = (", ".join(f"{run[k]:,.0f}" for run in got) for k in range(3))
        lines.append(f"| {store} | {out} | {taken} | {rss} |")
    memory, rocks = (statistics.median(t for _, t, _ in runs[s]) for s in STORES)
    lines += ["", f"RocksDB / memory, clicks taken (median of runs): **{rocks / memory:.2f}**."]
    return "\n".join(lines)
