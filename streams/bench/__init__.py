"""``make bench`` / ``streamsense bench``: throughput, latency and efficiency on the real local
stack, each against its limit measured in the same run (the machine is shared and noisy:
compare ratios, not absolute rates).

Sections (each replaces its part of BENCHMARKS.md with ``--write``):

* ``inference``: the raw Triton ceiling: texts/s and request latency of ``text_analysis`` (one
  model answers sentiment and entities) at batch sizes 1..64, an async gRPC client keeping 4
  requests in flight;
* ``text``: reviews/s end to end (produce -> ``reviews.enriched``) at saturation, with 1 and 2
  workers, divided by the batch-64 ceiling;
* ``latency``: end-to-end p50/p95/p99 (``processed_at - ts`` of each enriched review) at 25%,
  50% and 80% of the one-worker saturation rate, with a rate-controlled producer;
* ``clicks``: the click path (1 and 2 workers) next to a bare aiokafka loop, a minimal
  faust-streaming agent and a Quix Streams app doing plain per-user state, on one broker;
* ``store``: the click path with its tables in memory and in RocksDB, alternated;
* ``commits``: when a ``read_committed`` consumer sees each recommendation of a paced click
  stream, under at-least-once and under exactly-once with commit intervals 2.8, 1 and 0.25 s,
  and the clicks/s one worker takes in with each;
* ``adapter``: the sentiment adapter's learning curve on rated drugs.com reviews and on
  held-out customer tweets (served label against the base model, VADER and the majority class,
  prequential);
* ``analysis``: the detectors' CPU per review before and after themes and review-bombing
  screening, and the state they keep per product;
* ``worker``: the text path's CPU per review in one worker alone, Triton replaced by an
  in-process fake, with one text batch at a time and with the pipeline;
* ``profile``: where one worker spends its time on the text path (py-spy, when it may attach);
* ``soak`` (only when asked for: ``make soak``): one worker's resident memory while it takes
  per-key state for 100k click users and then 100k entities, each seen twice, then 2,000
  entities mentioned 40 times each with embeddings (themes and keywords), then new users and
  new entities that keep coming while idle ones expire (a day's time to live).

Before each section the whole machine's CPU use is sampled for two seconds while our own stack
is idle: above ``BUSY_WARNING`` (a quarter of all cores busy with other work) the section's
text in BENCHMARKS.md says so, because on a small machine anything else running skews it.

Rates are taken between 10% and 90% of the input consumed (startup and the tail excluded). The
review texts are the synthetic templates of ``streams.synthetic`` (short); the ceiling uses the
same texts, so the ratio compares like with like.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from models.benchmarks import write_section
from streams.bench.adapter import adapter
from streams.bench.analysis import analysis
from streams.bench.clicks import clicks
from streams.bench.commits import commits
from streams.bench.harness import BUSY_WARNING, REPO, Stack, busy_fraction
from streams.bench.plots import render
from streams.bench.profile import profile
from streams.bench.soak import soak
from streams.bench.stores import stores
from streams.bench.text import inference, latency, text
from streams.bench.worker import worker_cpu

__all__ = ["SECTIONS", "main"]

SECTIONS = ("inference", "text", "latency", "clicks", "store", "commits", "adapter", "analysis", "worker",
            "profile", "soak")


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # The soak (about 10 minutes here) runs on its own: `make soak`.
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=[s for s in SECTIONS if s != "soak"])
    parser.add_argument("--reviews", type=int, default=3000, help="reviews per text-path run")
    parser.add_argument("--events", type=int, default=60_000, help="click events for the click path")
    parser.add_argument("--soak-keys", type=int, default=100_000, help="distinct keys per soak phase")
    parser.add_argument("--seconds", type=float, default=15.0, help="per load level / batch size")
    parser.add_argument("--write", type=Path, help="replace each section's part of this file")
    parser.add_argument("--plots", type=Path, default=REPO / "deploy" / "benchmarks",
                        help="with --write: where each section's PNG goes (linked from the file)")
    return parser.parse_args(argv)


# The sections that need nothing from the others: name -> (stack, arguments) -> body.
_ON_THEIR_OWN: dict[str, Callable[[Stack, argparse.Namespace], str]] = {
    "clicks": lambda stack, args: clicks(stack, args.events),
    "store": lambda stack, args: stores(stack, args.events),
    "commits": lambda stack, args: commits(stack, args.seconds),
    "adapter": lambda stack, args: adapter(stack),
    "analysis": lambda stack, args: analysis(stack),
    "worker": lambda stack, args: worker_cpu(stack, 2 * args.reviews),
    "profile": lambda stack, args: profile(stack, args.reviews),
    "soak": lambda stack, args: soak(stack, args.soak_keys),
}


def main(argv: Sequence[str] | None = None) -> None:
    args = _arguments(argv)
    # SIGTERM unwinds like Ctrl-C: every worker, learner, broker and Triton it started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    sections: dict[str, str] = {}
    warnings: dict[str, str] = {}
    machine = f"{os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d')}"

    def check(*names: str) -> None:
        # What is busy now, besides our stack (still settling after its start) and this process,
        # is other work on the machine.
        ours = {"kafka": stack.kafka_pid, "triton": stack.triton_pid, "bench": os.getpid()}
        busy = busy_fraction(ours=ours)
        if busy is not None and busy > BUSY_WARNING:
            note = (f"**Warning:** {busy:.0%} of the machine's CPU time was taken by other work just "
                    f"before this section (or a measurement it is compared with) ran; its numbers are "
                    f"likely off.")
            print(note, file=sys.stderr, flush=True)
            warnings.update(dict.fromkeys(names, note))

    def out(name: str, body: str) -> None:
        if name in warnings:
            body = f"{warnings[name]}\n\n{body}"
        sections[name] = body
        print(f"\n## {name}\n{body}", flush=True)
        if args.write:
            png = render(name, stack.figures[name], args.plots) if name in stack.figures else None
            if png is not None:
                link = os.path.relpath(png, args.write.resolve().parent)
                body += f"\n\n![{name}]({link})"
                print(f"plot: {png}", flush=True)
            command = f"python -m streams.bench --only {name} --write {args.write}"
            write_section(args.write, f"bench-{name}", f"Command: `{command}` ({machine})\n\n{body}")

    needs_triton = bool({"inference", "text", "latency", "adapter", "profile"} & set(args.only))
    with Stack(with_triton=needs_triton) as stack:
        ceiling = saturation = 0.0
        if {"inference", "text", "latency"} & set(args.only):
            check("inference", "text", "latency")
            body, ceiling = inference(stack, args.seconds / 3)
            if "inference" in args.only:
                out("inference", body)
        if {"text", "latency"} & set(args.only):
            check("text", "latency")
            body, saturation = text(stack, ceiling, args.reviews)
            if "text" in args.only:
                out("text", body)
        if "latency" in args.only:
            check("latency")
            out("latency", latency(stack, saturation, args.seconds))
        for name, run in _ON_THEIR_OWN.items():
            if name in args.only:
                check(name)
                out(name, run(stack, args))
