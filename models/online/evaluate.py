"""Recommendation quality on simulated click streams: ours against two baselines.

Protocol (prequential, the same for every recommender): events are replayed in time order;
after each click / add-to-cart / purchase a recommender produces a list of ``k`` items for that
user; the user's *next click* is a hit if it is in that list (hit@k) and scores 1/rank (MRR@k).

* ``popularity``: the ``k`` most engaged items (time-decayed), the trigger item left out;
* ``co-visitation``: neighbours of the user's recent items, topped up with popular items;
* ``streamsense``: :class:`~models.online.recommender.ClickRecommender` (candidates from both,
  ranked by the online click-through model with segments and item sentiment);
* ``streamsense, no text signals``: the same without the review sentiment of items.

``python -m models.online.evaluate --write BENCHMARKS.md`` replaces its ``recommendations``
section (``models.benchmarks.write_section``).

>>> rows = evaluate(seeds=[1], users=200, items=100, sessions=800)
>>> [r.name for r in rows][:2]
['popularity', 'co-visitation']
>>> rows[2].hit_rate > rows[0].hit_rate
True
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from models.benchmarks import write_section
from models.online.candidates import CoVisitation, Popularity
from models.online.recommender import ClickEvent, ClickRecommender, UserState
from models.online.simulate import simulate_clicks

__all__ = ["Row", "covisitation_recommender", "evaluate", "popularity_recommender", "score_recommender"]

_K = 10


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    hit_rate: float
    mrr: float
    evaluated: int
    hit_rate_sd: float = 0.0
    log_loss: float | None = None
    auc: float | None = None


Recommend = Callable[[ClickEvent], list[str] | None]


def popularity_recommender() -> Recommend:
    pop = Popularity(leaders=_K + 1)

    def recommend(event: ClickEvent) -> list[str] | None:
        if event.action == "impression":
            return None
        pop.learn(event.item_id, event.ts)
        return [item for item, _ in pop.top(event.ts) if item != event.item_id][:_K]
    return recommend


def covisitation_recommender() -> Recommend:
    covis, pop, recent = CoVisitation(), Popularity(leaders=2 * _K), {}

    def recommend(event: ClickEvent) -> list[str] | None:
        if event.action == "impression":
            return None
        history = recent.setdefault(event.user_id, [])
        covis.learn(history, event.item_id, event.ts)
        pop.learn(event.item_id, event.ts)
        if event.item_id in history:
            history.remove(event.item_id)
        history.append(event.item_id)
        del history[:-10]
        scores = covis.candidates(history, event.ts)
        ranked = [i for i, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])) if i != event.item_id]
        ranked += [i for i, _ in pop.top(event.ts) if i != event.item_id and i not in scores]
        return ranked[:_K]
    return recommend


def _ours(signals, model: ClickRecommender) -> Recommend:
    users: dict[str, UserState] = {}

    def recommend(event: ClickEvent) -> list[str] | None:
        step = model.observe(users.setdefault(event.user_id, UserState()), event, signals)
        return None if step.items is None else [item for item, _ in step.items]
    return recommend


def score_recommender(events: Sequence[ClickEvent], recommend: Recommend,
                      on_scored: Callable[[ClickEvent, bool], None] | None = None
                      ) -> tuple[float, float, int]:
    """Hit rate and MRR of each click against the list its user got after their previous
    engagement, and the number of clicks scored; ``on_scored(click, hit)`` sees each one."""
    last: dict[str, list[str]] = {}
    hits, rr, n = 0, 0.0, 0
    for event in events:
        if event.action == "click" and event.user_id in last:
            ranked = last[event.user_id]
            n += 1
            if event.item_id in ranked:
                hits += 1
                rr += 1.0 / (ranked.index(event.item_id) + 1)
            if on_scored is not None:
                on_scored(event, event.item_id in ranked)
        items = recommend(event)
        if items is not None:
            last[event.user_id] = items
    return hits / max(n, 1), rr / max(n, 1), n


def evaluate(*, seeds: Sequence[int] = (0, 1, 2), users: int = 2000, items: int = 400,
             sessions: int = 6000) -> list[Row]:
    """One row per recommender: mean hit@10 / MRR@10 over ``seeds`` (each a fresh world)."""
    results: dict[str, list[tuple[float, float, int, float | None, float | None]]] = {}
    for seed in seeds:
        data = simulate_clicks(users=users, items=items, sessions=sessions, seed=seed)
        with_text, without_text = ClickRecommender(seed=seed), ClickRecommender(seed=seed)
        contenders: dict[str, tuple[Recommend, ClickRecommender | None]] = {
            "popularity": (popularity_recommender(), None),
            "co-visitation": (covisitation_recommender(), None),
            "streamsense": (_ours(data.item_signals, with_text), with_text),
            "streamsense, no text signals": (_ours({}, without_text), without_text),
        }
        for name, (recommend, model) in contenders.items():
            hit, mrr, n = score_recommender(data.events, recommend)
            report = model.report() if model else {}
            results.setdefault(name, []).append((hit, mrr, n, report.get("log_loss"), report.get("auc")))
    rows = []
    for name, runs in results.items():
        hits = [r[0] for r in runs]
        rows.append(Row(name=name, hit_rate=statistics.fmean(hits), mrr=statistics.fmean(r[1] for r in runs),
                        evaluated=sum(r[2] for r in runs),
                        hit_rate_sd=statistics.stdev(hits) if len(hits) > 1 else 0.0,
                        log_loss=statistics.fmean(r[3] for r in runs) if runs[0][3] is not None else None,
                        auc=statistics.fmean(r[4] for r in runs) if runs[0][4] is not None else None))
    return rows


def markdown(rows: Sequence[Row], *, seeds: Sequence[int], users: int, items: int, sessions: int) -> str:
    lines = [
        f"Simulated click streams (`models/online/simulate.py`: {users} users, {items} items, "
        f"{sessions} sessions per world, seeds {', '.join(map(str, seeds))}; known tastes, "
        "complements and item quality). Each click is scored against the list the recommender "
        "gave that user after their previous engagement (prequential). Log loss and AUC are the "
        "click-through model's, on impressions, over the last 5000 examples.",
        "",
        f"| recommender | hit@{_K} | MRR@{_K} | clicks evaluated | CTR log loss | CTR AUC |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ll = f"{r.log_loss:.3f}" if r.log_loss is not None else "-"
        auc = f"{r.auc:.3f}" if r.auc is not None else "-"
        lines.append(f"| {r.name} | {r.hit_rate:.3f} (sd {r.hit_rate_sd:.3f}) | {r.mrr:.3f} | "
                     f"{r.evaluated} | {ll} | {auc} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sessions", type=int, default=6000)
    parser.add_argument("--write", type=Path, help="replace the recommendations section of this file")
    args = parser.parse_args(argv)
    rows = evaluate(seeds=args.seeds, sessions=args.sessions)
    table = markdown(rows, seeds=args.seeds, users=2000, items=400, sessions=args.sessions)
    print(table)
    if args.write:
        command = f"python -m models.online.evaluate --write {args.write}"
        write_section(args.write, "recommendations", f"Command: `{command}`\n\n{table}")


if __name__ == "__main__":
    main()
