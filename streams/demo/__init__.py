"""``streamsense demo``: the local stack, a worker, a realistic replay with planted changes, a
live view, a summary and an HTML report. :mod:`.run` drives it, :mod:`.data` builds the
stream, :mod:`.summary` attributes alerts to planted changes, :mod:`.report` draws the
report; :mod:`.types` holds what they share."""

from streams.demo.run import run_demo
from streams.demo.types import DemoOptions

__all__ = ["DemoOptions", "run_demo"]
