"""Model versions on the real stack, as a user runs them: `streamsense train --labels` makes
version 2 from a small labelled file, `streamsense model load 2` switches what Triton serves
while a worker runs, with nothing lost (records before the switch carry the old version,
records after it the new one), and `rollback` switches back. After the rollback version 2
shadows version 1 (`model shadow 2 --share 1`): every record still comes from version 1 although
Triton holds the newer 2, and the worker's shadow counts agree with what each version says
when asked directly. Then the background learner
(`streamsense learn --once --shadow 0.5`) fine-tunes on the rated reviews the worker enriched,
among them a domain the model gets wrong. Its held-out reviews (16 of that domain, the rest
copies of a few plain templates both versions call right) hold too few disagreements to win at
`--alpha 0.0001` (18 are needed), so the new version stays a candidate; the next
`learn --once` tests it on the texts among the rated reviews enriched since that it has not met
(43), where it wins, and shadows it as version 3; `model load 3` then serves it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from streams.adapters.kafka_io import produce_lines, read_topic
from streams.adapters.triton_models import repository_versions
from streams.local.process import free_port
from streams.local.stack import LocalStack
from streams.settings import Settings
from streams.testing import domain_reviews, synthetic_events
from streams.testing.stack import REPO, WorkerProcess, ids_in
from streams.topics import TopicNames

pytestmark = pytest.mark.integration


def _repository(target: Path) -> str:
    """A copy of the model repository (hard links) holding version 1; its version name."""
    source = REPO / "triton_repo"
    if not (source / "text_analysis" / "1" / "model_info.json").exists():
        pytest.skip("triton_repo is built by `make setup`")
    shutil.copytree(source, target, copy_function=os.link)
    return json.loads((target / "text_analysis" / "1" / "model_info.json").read_text())["version"]


def _labels(path: Path) -> Path:
    """120 rated reviews, the way a user would export them (no package download needed)."""
    rows = [{"text": r["text"], "rating": r["rating"]} for r in domain_reviews(120, seed=31)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    return path


def _cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "streams.cli", *args], env={**os.environ, **env},
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_switching_versions_while_a_worker_runs_loses_nothing(
        kafka: Settings, stack_environment: dict[str, str], tmp_path: Path):
    repository = tmp_path / "repo"
    old = _repository(repository)
    ports = {"STREAMSENSE_TRITON_URL": f"127.0.0.1:{free_port()}",
             "STREAMSENSE_TRITON_HTTP_URL": f"127.0.0.1:{free_port()}",
             "STREAMSENSE_TRITON_METRICS_PORT": str(free_port())}
    home = tmp_path / "home"
    env = {**stack_environment, **ports, "STREAMSENSE_TOPIC_PREFIX": "mv1.", "STREAMSENSE_HOME": str(home),
           "STREAMSENSE_TRITON_MODEL_REPOSITORY": str(repository)}
    settings = kafka.model_copy(update={"topic_prefix": "mv1."})
    local = kafka.model_copy(update={
        "triton_url": ports["STREAMSENSE_TRITON_URL"], "triton_http_url": ports["STREAMSENSE_TRITON_HTTP_URL"],
        "triton_metrics_port": int(ports["STREAMSENSE_TRITON_METRICS_PORT"]), "home": home,
        "triton_model_repository": repository})
    names = TopicNames(prefix="mv1.")
    trained = _cli(env, "train", "--labels", str(_labels(tmp_path / "labels.jsonl")), "--epochs", "1",
                   "--eval-tweets", "100")
    assert "installed as text_analysis version 2" in trained and "yours (held out)" in trained
    new = json.loads((repository / "text_analysis" / "2" / "model_info.json").read_text())["version"]
    assert new != old and "-ft-" in new
    triton = LocalStack(local).triton()
    triton.start(timeout_s=local.startup_timeout_s)
    reviews = list(synthetic_events("reviews", 300, seed=11))
    phases = [reviews[:100], reviews[100:200], reviews[200:]]
    worker = WorkerProcess(env, log_dir=tmp_path)
    try:
        # Triton starts with the newest version; the first switch pins version 1.
        listed = _cli(env, "model", "list").splitlines()
        assert "served" in next(line for line in listed if new in line)
        _cli(env, "model", "load", "1")
        for i, phase in enumerate(phases):
            asyncio.run(produce_lines(settings, names.reviews, "reviews", [json.dumps(r).encode() for r in phase]))
            ids_in(settings, names.reviews_enriched, "review_id", expect=sum(map(len, phases[:i + 1])),
                   timeout_s=180, worker=worker)
            if i == 0:
                _cli(env, "model", "load", "2")
            elif i == 1:
                assert "version 1" in _cli(env, "model", "rollback")
                assert "shadowing text_analysis version 2" in _cli(env, "model", "shadow", "2", "--share", "1")
                assert "shadow (100% of texts)" in next(line for line in _cli(env, "model", "list").splitlines()
                                                        if new in line)
        shadowed = _shadow_counts(env, phases[2], worker)
        expected = _shadow_expected(local, phases[2])
        compared_line = f"{shadowed['texts']:.0f} texts compared, same sentiment"
        assert compared_line in _cli(env, "model", "list")  # the workers' counts, summed by the CLI

        async def versions() -> dict[str, list[str]]:
            out: dict[str, list[str]] = {}
            async for rec in read_topic(settings, names.reviews_enriched, idle_timeout_s=3):
                body = json.loads(rec.value)
                out.setdefault(body["review_id"], []).append(body["model"]["ner"])
            return out

        seen = asyncio.run(versions())
        learned = _learn(env, settings, names, worker)
    finally:
        worker.stop()
        triton.stop()
    assert worker.proc.returncode in (0, -15, 143), worker.tail()
    assert set(seen) == {r["review_id"] for r in reviews}
    assert {v for r in phases[0] for v in seen[r["review_id"]]} == {old}
    assert {v for r in phases[1] for v in seen[r["review_id"]]} == {new}
    assert {v for r in phases[2] for v in seen[r["review_id"]]} == {old}
    assert [v.number for v in repository_versions(repository)] == [1, 2, 3]
    rounds = [json.loads(line) for line in (home / "learner" / "rounds.jsonl").read_text().splitlines()]
    assert [(r.get("kind"), r["accepted"]) for r in rounds] == [(None, False), ("check", True)]
    assert rounds[0]["candidate"] and sum(rounds[0]["paired"][k] for k in ("after_right", "before_right")) <= 17
    assert rounds[1]["shadowed"] == 3 and rounds[1]["paired"]["after_right"] > rounds[0]["paired"]["after_right"]
    third = json.loads((repository / "text_analysis" / "3" / "model_info.json").read_text())["version"]
    assert learned and {r["model"]["ner"] for r in learned} == {third}
    # Every shadowed text was compared or skipped (one comparison runs at a time), none failed,
    # and the counts lie where the compared texts' direct answers put them.
    compared = int(shadowed["texts"])
    assert compared + shadowed["skipped"] == len(phases[2]) and shadowed["errors"] == 0, shadowed
    assert compared > 0
    for what, values in expected.items():
        low, high = sum(sorted(values)[:compared]), sum(sorted(values)[-compared:]) if compared else 0
        assert low - 1 <= shadowed[what] <= high + 1, (what, shadowed[what], low, high)


def _shadow_counts(env: dict[str, str], reviews: list[dict], worker: WorkerProcess) -> dict[str, float]:
    """The worker's shadow counters once every shadowed review is accounted for."""
    from prometheus_client.parser import text_string_to_metric_families

    from streams.adapters.worker_probe import shadow_totals

    deadline = time.monotonic() + 120
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{env['STREAMSENSE_METRICS_PORT']}/metrics",
                                      timeout=10).read().decode()
        pairs = shadow_totals(text).values()
        got = {key: sum(pair[key] for pair in pairs)
               for key in ("texts", "sentiment", "entities", "rated", "served_right", "shadow_right")}
        plain = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}
        got["skipped"] = plain.get("streamsense_shadow_skipped_total", 0.0)
        got["errors"] = plain.get("streamsense_shadow_errors_total", 0.0)
        if got["texts"] + got["skipped"] + got["errors"] >= len(reviews) or time.monotonic() > deadline \
                or worker.proc.poll() is not None:
            return got
        time.sleep(1)


def _shadow_expected(local: Settings, reviews: list[dict]) -> dict[str, list[int]]:
    """Per review, what the shadow counters should add for it: both versions asked directly."""
    import numpy as np
    import tritonclient.http as httpclient

    from models.online.sentiment import rating_label
    from streams.core.shadow import compare
    from streams.core.text import Analysis

    client = httpclient.InferenceServerClient(local.triton_http_url.removeprefix("http://"))

    def ask(version: str) -> list[Analysis]:
        out = []
        for r in reviews:
            inp = httpclient.InferInput("TEXT", [1, 1], "BYTES")
            inp.set_data_from_numpy(np.array([[r["text"].encode()]], dtype=np.object_))
            result = client.infer("text_analysis", [inp], model_version=version)
            out.append(Analysis.from_json(result.as_numpy("ANALYSIS")[0][0].decode()))
        return out

    tallies = [compare([a], [b], [rating_label(r.get("rating"))])
               for a, b, r in zip(ask("1"), ask("2"), reviews, strict=True)]
    return {"sentiment": [t.sentiment_agreed for t in tallies], "entities": [t.entities_agreed for t in tallies],
            "rated": [t.rated for t in tallies], "served_right": [t.served_right for t in tallies],
            "shadow_right": [t.shadow_right for t in tallies]}


def _learn(env: dict[str, str], settings: Settings, names: TopicNames, worker: WorkerProcess) -> list[dict]:
    """Rated horror-film reviews (the model gets most wrong), a learner round, then unrated
    ones: what the learner's version says about them."""
    rated = domain_reviews(400, seed=21)  # templated: the last 300 hold 43 texts not among the first 100
    learn = ("learn", "--once", "--epochs", "2", "--eval-tweets", "20", "--shadow", "0.5", "--alpha", "0.0001")
    asyncio.run(produce_lines(settings, names.reviews, "reviews", [json.dumps(r).encode() for r in rated[:100]]))
    ids_in(settings, names.reviews_enriched, "review_id", expect=400, timeout_s=180, worker=worker)
    out = _cli(env, *learn, "--every", "100")
    assert "the new one is tested on the rated reviews that come next" in out, out
    asyncio.run(produce_lines(settings, names.reviews, "reviews", [json.dumps(r).encode() for r in rated[100:]]))
    ids_in(settings, names.reviews_enriched, "review_id", expect=700, timeout_s=180, worker=worker)
    out = _cli(env, *learn, "--every", "1000")  # no new round: the candidate meets the new texts
    assert "candidate on 43 more rated texts" in out and "shadowing version 3 on 50%" in out, out
    assert "shadow (50% of texts)" in next(line for line in _cli(env, "model", "list").splitlines()
                                           if line.strip().startswith("3 "))
    assert "serving text_analysis version 3" in _cli(env, "model", "load", "3")
    fresh = [{k: v for k, v in r.items() if k != "rating"} for r in domain_reviews(50, seed=22)]
    asyncio.run(produce_lines(settings, names.reviews, "reviews", [json.dumps(r).encode() for r in fresh]))
    ids_in(settings, names.reviews_enriched, "review_id", expect=750, timeout_s=180, worker=worker)
    wanted = {r["review_id"] for r in fresh}

    async def read() -> list[dict]:
        return [body async for rec in read_topic(settings, names.reviews_enriched, idle_timeout_s=3)
                if (body := json.loads(rec.value))["review_id"] in wanted]

    return asyncio.run(read())
