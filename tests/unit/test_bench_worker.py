"""make bench's ``worker`` section: the text path's own cost, measured in one process."""

import json

from streams.bench.worker import in_process_us
from streams.synthetic import synthetic_events


def test_the_in_process_text_path_runs_every_stage_it_measures():
    # in_process_us refuses to report a number unless every review was enriched, none was
    # dead-lettered, entities were monitored (mentions through their own agent) and sentiment
    # stats were closed.
    reviews = [json.dumps(r).encode() for r in synthetic_events("reviews", 400, seed=4)]
    assert in_process_us(reviews, commit_every=2, repeats=1) > 0
