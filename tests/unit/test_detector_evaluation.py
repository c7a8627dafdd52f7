from pathlib import Path

from models.benchmarks import write_section
from models.sequential.evaluate import SCENARIOS, SECTION, evaluate, false_alarms_per_10k, markdown
from models.sequential.sentiment_shift import SentimentShiftDetector


def test_harness_measures_delay_detection_and_false_alarms():
    rows = evaluate("ours", "arl0=1000", lambda: SentimentShiftDetector(arl0=1000), seeds=range(8),
                    null_seeds=range(100, 108), length=3000, change_at=500, horizon=1000)
    assert [r.scenario for r in rows] == [s.name for s in SCENARIOS]
    by = {r.scenario: r for r in rows}
    assert by["abrupt +0.40"].detection_rate == 1.0 and 0 < by["abrupt +0.40"].mean_delay < 200
    assert by["abrupt +0.40"].mean_delay < by["gradual +0.40 over 500"].mean_delay
    # ARL0 1000 means at most 10 false alarms per 10k events on average.
    assert rows[0].false_alarms_per_10k <= 10


def test_false_alarm_rate_of_a_trigger_happy_detector_is_measured_as_high():
    class Always:
        drift_detected = True

        def update(self, x):
            pass

    assert false_alarms_per_10k(Always, range(2), length=100) == 1e4


def test_section_is_replaced_in_place(tmp_path: Path):
    rows = evaluate("ours", "arl0=1000", lambda: SentimentShiftDetector(arl0=1000), seeds=range(2),
                    null_seeds=range(2), length=600, change_at=300, horizon=300)
    section = markdown(rows, {"ADWIN": 0.5}, command="cmd", seconds=1.0, settings={"budget": 1.0})
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nintro\n")
    write_section(path, SECTION, section)
    write_section(path, SECTION, section)
    text = path.read_text()
    assert text.count("<!-- detectors:start -->") == 1 and text.startswith("# Benchmarks\n\nintro")
