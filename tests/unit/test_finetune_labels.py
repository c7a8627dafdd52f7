"""Reading the user's labelled file for `streamsense train --labels`: labels, ratings, and a
clear reason for every line left out."""

import json

from models.bert.finetune import read_labels


def test_labels_and_ratings_are_read_and_bad_lines_are_reported(tmp_path):
    path = tmp_path / "labels.jsonl"
    lines = [{"text": "Works well", "label": "positive"}, {"text": "Broke at once", "rating": 1},
             {"text": "It is a kettle", "rating": 3}, {"text": "Great", "rating": 5.0},
             {"text": "", "label": "positive"}, {"text": "No label"}, {"text": "Odd", "label": "great"},
             {"text": "Flag", "rating": True}, {"text": "Nan", "rating": float("nan")}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "not json\n[1, 2]\n\n")
    texts, problems = read_labels(path)
    assert [(t.text, t.label) for t in texts] == [("Works well", "positive"), ("Broke at once", "negative"),
                                                  ("It is a kettle", "neutral"), ("Great", "positive")]
    assert [p.split(":")[0] for p in problems] == ["line 5", "line 6", "line 7", "line 8", "line 9", "line 10",
                                                  "line 11"]


def test_the_rating_scale_is_the_callers(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text('{"text": "ok", "rating": 6}\n{"text": "meh", "rating": 4}\n')
    texts, _ = read_labels(path, negative_max=4, positive_min=7)
    assert [t.label for t in texts] == ["neutral", "negative"]
