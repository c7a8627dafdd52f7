"""Why a subject's sentiment shifted: the themes that grew among its negative texts. Pure logic.

A :class:`~models.online.themes.ThemeTracker` knows the theme of each recent negative text; the
monitor knows the texts themselves (its evidence). :func:`explain_shift` puts them together into
an alert's ``explanation`` (:class:`~streams.records.Explanation`): the themes whose share of the
negatives grew most over the alert's window, each with its words, its share now and before,
and the quotes closest to its centre, plus one sentence for the alert's ``message``.

>>> from streams.records import AlertTheme
>>> summary_sentence([AlertTheme(words=["battery", "charge", "dies"], share_now=0.41, share_before=0.0,
...                              interval=(0.3, 0.52), count=37, new=True),
...                   AlertTheme(words=["late", "delivery"], share_now=0.18, share_before=0.09,
...                              interval=(0.1, 0.3), count=16, new=False)])
"Mostly 'battery / charge / dies' (41% of negatives, new), then 'late / delivery' (18%, was 9%)."
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from models.online import TextBackground, ThemeShare, ThemeTracker
from streams.core.alerts import AlertBook, Shift
from streams.records import Alert, AlertTheme, Explanation

__all__ = ["emerging_alerts", "explain_shift", "summary_sentence"]

QUOTES = 3


def explain_shift(tracker: ThemeTracker | None, negatives: Sequence[dict[str, Any]], *, events: int,
                  background: TextBackground | None = None, top: int = 3) -> Explanation | None:
    """The explanation of a shift seen over the last ``events`` texts, or None when there is
    nothing to say (no themes: the model served no embeddings; or no theme grew).

    ``negatives``: the monitor's recent negative texts, each ``{"id", "text", "theme", "fit"}``
    (``theme``/``fit``: the theme id and cosine :meth:`ThemeTracker.learn_one` returned)."""
    if tracker is None:
        return None
    # A theme with no word of its own says nothing a reader could act on: left out.
    shares = [s for s in tracker.explain(events, background=background, top=top + 1) if s.words][:top]
    if not shares:
        return None
    themes = [_alert_theme(share, negatives) for share in shares]
    return Explanation(themes=themes, summary=summary_sentence(themes))


def emerging_alerts(book: AlertBook, subject: tuple[str, str], tracker: ThemeTracker | None,
                    negatives: Sequence[dict[str, Any]], now: datetime,
                    background: TextBackground | None = None) -> list[Alert]:
    """The ``emerging_theme`` alert for the theme ``tracker`` just saw emerge (``tracker.emerged``):
    new to the subject, and taking a share of its negative texts its test says ordinary themes do
    not (see :meth:`ThemeTracker._test_emerging`), whether or not the negative share moved."""
    if tracker is None or tracker.emerged is None:
        return []
    share = tracker.share_of(tracker.emerged, background=background)
    if share is None or not share.words:
        return []
    theme = _alert_theme(share, negatives)
    label = " / ".join(share.words)
    p0 = tracker.emerging_share
    shift = Shift(baseline_rate=p0, current_rate=share.share_now, interval=share.interval, events=share.count,
                  statistic=0.0, threshold=0.0, measure=f"Share of negative texts about '{label}'",
                  interval_label="95% CI", unit_of_events="negative texts",
                  guarantee=(f"ARL0 >= {tracker.arl0:g} negative texts per theme while a new theme's share "
                             f"of them stays <= {p0:.0%} (Bernoulli CUSUM bank, Lorden 1971)"))
    message = (f"A new theme in the negative texts of {subject[0]} {subject[1]}: '{label}', "
               f"{share.share_now:.0%} of them since it appeared ({share.count} texts, 95% CI "
               f"{share.interval[0]:.0%}-{share.interval[1]:.0%}); ordinary themes stay under {p0:.0%}.")
    alert = book.on_shift(kind="emerging_theme", subject=subject, shift=shift, detector="ThemeTracker",
                          params={"emerging_share": p0, "arl0": tracker.arl0, "warmup": tracker.warmup},
                          evidence=[], now=now, message=message,
                          explanation=Explanation(themes=[theme], summary=summary_sentence([theme])))
    book.close_quietly(kind="emerging_theme", subject=subject, now=now)  # a one-off, then the cooldown
    return [alert] if alert else []


def _alert_theme(share: ThemeShare, negatives: Sequence[dict[str, Any]]) -> AlertTheme:
    """A theme as an alert shows it, quoting its negative texts most central first."""
    mine = sorted((n for n in negatives if n.get("theme") == share.theme_id),
                  key=lambda n: -float(n.get("fit", 0.0)))  # stable: arrival order among equals
    quotes = [{"id": str(n["id"]), "text": str(n["text"])} for n in mine[:QUOTES]]
    return AlertTheme(words=share.words, share_now=round(share.share_now, 4),
                      share_before=round(share.share_before, 4), interval=share.interval, count=share.count,
                      new=share.new, quotes=quotes)


def summary_sentence(themes: Sequence[AlertTheme]) -> str:
    """One sentence on the themes, largest growth first."""
    parts = []
    for i, theme in enumerate(themes):
        label = " / ".join(theme.words) or "(no distinctive words)"
        of = " of negatives" if i == 0 else ""
        change = "new" if theme.new else f"was {theme.share_before:.0%}"
        parts.append(f"'{label}' ({theme.share_now:.0%}{of}, {change})")
    if not parts:
        return ""
    head, rest = parts[0], parts[1:]
    return "Mostly " + head + "".join(f", then {p}" for p in rest) + "."
