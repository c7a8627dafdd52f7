"""Prints the chaos suite's scenarios x outcome table at the end of the run (the README's
reliability table comes from it)."""

from __future__ import annotations

from .harness import OUTCOMES


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not OUTCOMES:
        return
    write = terminalreporter.write_line
    write("")
    write("chaos: scenario x outcome (good records + bad; lost; duplicated; dead-letters lost / duplicated)")
    write("| scenario | guarantee | faults | records | lost | duplicated | dead-letters lost / dup | took |")
    write("|---|---|---|---|---|---|---|---|")
    for outcome in OUTCOMES:
        write(outcome.row())
