"""Section ``profile``: where one worker spends its time on the text path (py-spy)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from streams.adapters.kafka_admin import ensure_topics
from streams.adapters.kafka_io import produce_lines
from streams.bench.harness import Stack, Workers, review_texts

__all__ = ["profile"]



def profile(stack: Stack, n: int, seconds: float = 10.0) -> str:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return "py-spy is not installed (`pip install py-spy`): no profile."
    settings, env, names = stack.prefixed("bench-p.")
    reviews = review_texts(n, seed=4)
    asyncio.run(ensure_topics(settings, names.all()))
    asyncio.run(produce_lines(settings, names.reviews, "reviews", [json.dumps(r).encode() for r in reviews]))
    raw = stack.home / "profile.txt"
    with Workers(env, 1, stack.home) as running:
        deadline = time.monotonic() + 120
        while running.total('streamsense_events_out_total{topic="reviews.enriched"}') < 0.1 * n and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        done = subprocess.run([spy, "record", "-p", str(running.procs[0].pid), "-d", str(int(seconds)),
                               "-f", "raw", "-o", str(raw)], capture_output=True, text=True)
    if done.returncode != 0 or not raw.exists():
        return f"py-spy could not attach ({done.stderr.strip()[:200]}): no profile."
    return _profile_table(raw.read_text())


def _profile_table(raw: str, top: int = 12) -> str:
    """Inclusive share of samples of the busiest functions in the worker's main thread."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not any("Handle._run" in f for f in frames):
            continue  # not the event loop thread's work
        total += int(count)
        for frame in {re.sub(r" \(.*/site-packages/", " (", f) for f in frames}:
            inclusive[frame] += int(count)
    interesting = [(f, c) for f, c in inclusive.most_common()
                   if not re.match(r"(Handle\._run|BaseEventLoop|<module>|_run_code|Worker\.|Typer|Command|"
                                   r"Context\.invoke|_main|main |worker |get_callback|_run_module)", f)]
    lines = ["| share of event-loop samples | function |", "|---|---|"]
    lines += [f"| {c / max(total, 1):.0%} | `{f}` |" for f, c in interesting[:top]]
    return "\n".join(lines)
