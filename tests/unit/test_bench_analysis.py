"""make bench's ``analysis`` section: the detectors' cost before and after themes and screening."""

from types import SimpleNamespace

from streams.bench.analysis import analysis


def test_the_analysis_section_reports_each_variant_with_its_cost_and_state():
    body = analysis(SimpleNamespace(triton_cpu_ms_per_text=4.0, figures={}), n=600)
    rows = [line for line in body.splitlines() if line.startswith("| ") and "µs" in line]
    assert [r.split(" | ")[0] for r in rows] == ["| before: sentiment shift only",
                                                  "| + themes (sentiment alerts explained)",
                                                  "| + themes + review-bombing screening"]
    sizes = [float(r.split(" | ")[3].removesuffix(" kB |")) for r in rows]
    assert sizes[0] < sizes[1] < sizes[2] < 9  # themes and screening keep bounded state
    assert "4.0 ms" in body
