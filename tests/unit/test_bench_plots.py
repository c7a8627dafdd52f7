"""The benchmark's plots are drawn from the numbers each section measured."""

import pytest

from streams.bench.plots import render

pytest.importorskip("matplotlib")

FIGURES = {
    "inference": {"rows": [{"batch": b, "texts_per_s": 100.0 * b ** 0.5, "p50_ms": 5.0 * b, "p99_ms": 9.0 * b}
                           for b in (1, 2, 4, 8, 16, 32, 64)]},
    "text": {"ceiling": 700.0, "rates": {1: 420.0, 2: 445.0}},
    "latency": {"rows": [{"offered": r, "p50": 0.1 * r / 100, "p95": 0.2 * r / 100, "p99": 0.3 * r / 100}
                         for r in (100, 200, 320)]},
    "clicks": {"rates": {"bare": 10000.0, "quix": 12000.0, "faust": 850.0, "streamsense-1": 1500.0,
                         "streamsense-2": 2500.0}},
    "commits": {"rows": [{"guarantee": g, "interval": i, "p50": 0.05 + i / 2, "p95": 0.1 + i, "p99": 0.1 + i,
                          "saturated": 1500.0 - 100 * i} for g, i in (("at_least_once", 2.8), ("exactly_once", 2.8),
                                                                    ("exactly_once", 0.25))]},
    "adapter": {"sets": {title: {name: [0.5 + 0.3 * k / 300 + shift for k in range(300)]
                                 for name, shift in (("served", 0.0), ("base", -0.05), ("adapted", 0.02))}
                         for title in ("drugs.com reviews", "customer tweets (held out)")}},
    "soak": {"rows": [("start", 0, 0, 160.0), ("click users", 50, 50, 200.0), ("click users", 100, 50, 210.0),
                      ("entities", 50, 50, 260.0), ("entities", 100, 50, 270.0)]},
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_each_section_renders_a_png(tmp_path, name):
    path = render(name, FIGURES[name], tmp_path)
    assert path == tmp_path / f"{name}.png"
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5_000


def test_a_section_without_a_plot_gives_none(tmp_path):
    assert render("profile", {}, tmp_path) is None
    assert not list(tmp_path.iterdir())
