"""sentiment.stats windows: every text counted in exactly the windows still open when it came."""

import math
import random
from collections import Counter

import pytest

from streams.core.windows import SentimentWindows, stats_records


@pytest.mark.parametrize("seed", range(5))
def test_windows_count_what_a_brute_force_count_says_and_stay_bounded(seed: int):
    rng, windows = random.Random(seed), SentimentWindows(sizes=(60, 3600), grace_s=90)
    expected, late, dropped, emitted, watermark = Counter(), Counter(), 0, {}, None
    t = 0.0
    for _ in range(5000):
        t += rng.expovariate(1 / 5)  # a text every 5 s on average, some out of order
        ts = t - (rng.uniform(0, 200) if rng.random() < 0.1 else 0.0)
        label = rng.choice(["negative", "neutral", "positive"])
        for size in (60, 3600):
            start = math.floor(ts / size) * size
            if watermark is not None and start + size + 90 <= watermark:
                dropped += 1
                continue
            expected[size, start, label] += 1
            late[size, start] += watermark is not None and ts < watermark
        watermark = ts if watermark is None else max(watermark, ts)
        for w in windows.observe(ts, label, 0.0, None):
            emitted[w["size"], w["start"]] = w
        assert windows.open_windows <= 2 + 4  # two hours and a few minutes open at most
    assert windows.dropped_late == dropped > 0
    assert emitted and all(
        w["labels"][label] == expected[key[0], key[1], label] and w["late"] == late[key]
        for key, w in emitted.items() for label in ("negative", "neutral", "positive"))
    closed = {(size, start) for size, start, _ in expected if start + size + 90 <= watermark}
    assert set(emitted) == closed


def test_stats_records_name_the_largest_live_themes():
    windows = SentimentWindows(sizes=(60,), grace_s=0)
    for ts, theme in ((1, 7), (2, 7), (3, 8), (4, 9), (5, None)):
        windows.observe(float(ts), "negative", -0.5, theme)
    closed = windows.observe(61.0, "positive", 0.5, None)
    [record] = stats_records(("product", "p1"), closed, theme_words={7: ["battery"], 8: ["lid"]}.get)
    assert record.window.size == "1m" and record.count == 5 and record.mean_score == -0.5
    assert [t.words for t in record.themes] == [["battery"], ["lid"]]  # theme 9 was recycled

