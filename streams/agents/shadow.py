"""Shadowing a candidate version from the text path (``streamsense model shadow VERSION``).

While the model's route names a shadow version, each text batch's sampled texts (the route's
share, :func:`streams.core.shadow.sample`) go to it too, *after* the served answers are in and
*off* the batch's path: the comparison runs as a background task, one at a time (a batch that
finds one still running counts its sample as skipped), with its own timeout and no retries. So
a slow or failing candidate costs the served path nothing and never holds back a record; what
it answered is counted in Prometheus (``streamsense_shadow_*``), labelled by both version names.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from models.online.sentiment import rating_label
from streams.adapters.metrics import Metrics
from streams.core.adaptation import RatingScale
from streams.core.shadow import compare, sample
from streams.core.text import Analysis

__all__ = ["ShadowComparison"]

log = logging.getLogger(__name__)


class ShadowComparison:
    def __init__(self, inferencer, metrics: Metrics, *, scale: RatingScale = RatingScale(),
                 timeout_s: float = 30.0) -> None:
        self.inferencer = inferencer  # a TritonInferencer: its ``route`` and ``analyse_version``
        self.metrics = metrics
        self.scale = scale
        self.timeout_s = timeout_s
        self._task: asyncio.Task | None = None
        self._warned_at = -float("inf")

    def launch(self, texts: Sequence[str], served: Sequence[Analysis], records: Sequence, *,
               domain: str | None = None) -> None:
        """Compare the shadow's answers on this batch's sample with ``served`` (one per text;
        ``records``: the decoded input of each text, for its rating; ``domain``: asked of the
        shadow as of the served version). Returns at once."""
        route = getattr(self.inferencer, "route", None)
        if route is None or route.shadow is None:
            return
        picked = sample(texts, route.share)
        if not picked:
            return
        if self._task is not None and not self._task.done():
            self.metrics.shadow_skipped.inc(len(picked))
            return
        labels = [rating_label(getattr(records[i], "rating", None), negative_max=self.scale.negative_max,
                               positive_min=self.scale.positive_min) for i in picked]
        self._task = asyncio.ensure_future(self._run(route.shadow, [texts[i] for i in picked],
                                                     [served[i] for i in picked], labels, domain))

    async def wait(self) -> None:
        """Until the comparison in flight (if any) has been counted (tests, shutdown)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self, version: int, texts: list[str], served: list[Analysis], labels: list,
                   domain: str | None = None) -> None:
        m = self.metrics
        try:
            shadow = await asyncio.wait_for(self.inferencer.analyse_version(texts, version, domain=domain),
                                            self.timeout_s)
            tally = compare(served, shadow, labels)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            m.shadow_errors.inc(len(texts))
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                log.warning("shadow version %d failed on %d texts (%r); the served path is unaffected",
                            version, len(texts), exc)
            return
        names = {"served": served[0].model, "shadow": shadow[0].model}
        m.shadow_texts.labels(**names).inc(tally.texts)
        m.shadow_agreed.labels(**names, output="sentiment").inc(tally.sentiment_agreed)
        m.shadow_agreed.labels(**names, output="entities").inc(tally.entities_agreed)
        m.shadow_rated.labels(**names).inc(tally.rated)
        m.shadow_rated_right.labels(**names, labeller="served").inc(tally.served_right)
        m.shadow_rated_right.labels(**names, labeller="shadow").inc(tally.shadow_right)
