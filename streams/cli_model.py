"""``streamsense train --labels`` and ``streamsense model list | load | rollback``: new model
versions from the user's labels, and switching what Triton serves without a restart."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from streams.local.settings import LocalStackSettings
from streams.settings import explain_settings_error

__all__ = ["console", "fail", "learn", "local_settings", "model_app", "reapply_model_version", "train"]

console = Console(stderr=True)
model_app = typer.Typer(no_args_is_help=True, help="List, shadow, switch and roll back the served model "
                                                    "version (no restart of Triton or the workers).")


def local_settings() -> LocalStackSettings:
    # The CLI runs workers and the local stack: the worker's settings and the stack's own.
    try:
        return LocalStackSettings()
    except ValidationError as exc:
        console.print(f"[red]invalid STREAMSENSE_* settings:[/red]\n{explain_settings_error(exc)}")
        raise typer.Exit(2) from None


def fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def reapply_model_version(settings: LocalStackSettings) -> None:
    """Triton starts with the newest version; serve the one last switched to instead."""
    from streams.adapters.triton_models import ModelControl, history, repository_versions

    switches = history(settings.home)
    installed = {v.number for v in repository_versions(settings.triton_model_repository)}
    if switches and int(switches[-1]["version"]) in installed:
        control = ModelControl(settings.triton_http_url, home=settings.home)
        if control.served() != [int(switches[-1]["version"])]:
            control.load(int(switches[-1]["version"]), record=False)
            console.print(f"serving text_analysis version {switches[-1]['version']} (the last switch)")


def _require_installed(settings: LocalStackSettings, version: int) -> None:
    from streams.adapters.triton_models import repository_versions

    if version not in {v.number for v in repository_versions(settings.triton_model_repository)}:
        raise fail(f"no version {version} in {settings.triton_model_repository} (`streamsense model list`)")


@model_app.command("list")
def model_list() -> None:
    """The installed versions of text_analysis, which one Triton serves and which one it shadows."""
    from streams.adapters.triton_models import ModelControl, ModelRoute, history, repository_versions

    settings = local_settings()
    try:
        route = ModelControl(settings.triton_http_url, home=settings.home).route()
    except Exception as exc:
        route = ModelRoute(None)
        console.print(f"[yellow]Triton at {settings.triton_http_url} did not answer: {exc!r}[/yellow]")
    for version in repository_versions(settings.triton_model_repository):
        mark = ("served" if version.number == route.served else
                f"shadow ({route.share:.0%} of texts)" if version.number == route.shadow else "")
        print(f"{version.number:>4}  {version.name}  {mark}".rstrip())
    switches = history(settings.home)
    if switches:
        print(f"last switch: version {switches[-1]['version']} at {switches[-1]['at']}")
    if route.shadow is not None:
        _print_comparison(settings)


def _print_comparison(settings: LocalStackSettings) -> None:
    """What the workers on this host counted of the shadow so far (Prometheus has every host's)."""
    from streams.adapters.worker_probe import shadow_comparison

    for (served, shadow), c in shadow_comparison(settings).items():
        if not c["texts"]:
            continue
        texts, rated = c["texts"], c["rated"]
        print(f"shadow {shadow} vs served {served} (workers on this host): {texts:.0f} texts compared, "
              f"same sentiment {c['sentiment'] / texts:.1%}, same entities {c['entities'] / texts:.1%}"
              + (f"; polar accuracy on {rated:.0f} rated: served {c['served_right'] / rated:.3f}, "
                 f"shadow {c['shadow_right'] / rated:.3f}" if rated else ""))


@model_app.command("load")
def model_load(version: Annotated[int, typer.Argument(help="the version folder's number")]) -> None:
    """Serve VERSION from now on; returns when Triton reports it ready."""
    from streams.adapters.triton_models import ModelControl, ModelVersionError

    settings = local_settings()
    _require_installed(settings, version)
    try:
        ModelControl(settings.triton_http_url, home=settings.home).load(version)
    except ModelVersionError as exc:
        raise fail(str(exc)) from None
    print(f"serving text_analysis version {version}")


@model_app.command("shadow")
def model_shadow(
    version: Annotated[int | None, typer.Argument(help="the candidate version's number")] = None,
    share: Annotated[float, typer.Option(min=0.001, max=1.0, help="share of the texts the workers "
                                         "also send to the candidate")] = 0.1,
    stop: Annotated[bool, typer.Option("--stop", help="unload the shadow; the served version stays")] = False,
) -> None:
    """Try VERSION on a share of the texts next to the served one, which keeps serving.

    Workers send the share to both versions and Prometheus shows how they compare
    (streamsense_shadow_*: agreement, and on rated reviews both accuracies). Then
    `model load VERSION` to switch to it, or `--stop`. A Triton restart ends the shadow."""
    from streams.adapters.triton_models import ModelControl, ModelVersionError

    settings = local_settings()
    control = ModelControl(settings.triton_http_url, home=settings.home)
    try:
        if stop:
            stopped = control.stop_shadow()
            print(f"stopped shadowing version {stopped}" if stopped is not None else "no shadow was running")
            return
        if version is None:
            raise fail("name the version to shadow (`streamsense model list`), or pass --stop")
        _require_installed(settings, version)
        served = control.shadow(version, share=share)
    except ModelVersionError as exc:
        raise fail(str(exc)) from None
    print(f"shadowing text_analysis version {version} on {share:.0%} of the texts; version {served} "
          "still serves (metrics: streamsense_shadow_*)")


@model_app.command("rollback")
def model_rollback() -> None:
    """Serve the version that was served before the last switch."""
    from streams.adapters.triton_models import ModelControl, ModelVersionError

    settings = local_settings()
    try:
        version = ModelControl(settings.triton_http_url, home=settings.home).rollback()
    except ModelVersionError as exc:
        raise fail(str(exc)) from None
    print(f"serving text_analysis version {version} again")


def train(
    labels: Annotated[Path, typer.Option(help="JSON lines: text, and label (negative, neutral, positive) "
                                         "or rating", exists=True, dir_okay=False)],
    epochs: Annotated[int, typer.Option(min=1, help="passes over your texts")] = 2,
    base: Annotated[int | None, typer.Option(help="the version to start from (default: the newest)")] = None,
    eval_tweets: Annotated[int, typer.Option(min=10, help="our held-out tweets and customer tweets "
                                             "scored before and after (each)")] = 1000,
) -> None:
    """Fine-tune the model on your labelled texts and install it as a new model version
    (then `streamsense model load N`). Needs the training extra (torch), as `make setup` installs."""
    from streams.adapters.triton_models import repository_versions

    try:
        from models.bert import calibration, data, export, finetune
    except ImportError as exc:
        raise fail(f"training needs the `train` extra (torch, transformers): {exc}") from None
    settings = local_settings()
    repository = settings.triton_model_repository
    versions = {v.number: v for v in repository_versions(repository)}
    start = versions.get(base if base is not None else max(versions, default=0))
    if start is None or start.weights is None:
        raise fail(f"no installed version with torch weights to start from in {repository} (`make setup`)")
    texts, problems = finetune.read_labels(labels, negative_max=settings.rating_negative_max,
                                           positive_min=settings.rating_positive_min)
    for problem in problems[:20]:
        console.print(f"[yellow]{labels}: {problem} (left out)[/yellow]")
    console.print(f"fine-tuning version {start.number} ({start.name}) on {len(texts)} labelled texts")
    out = data.cache_dir() / "models" / f"finetuned-{labels.stem}-{start.number}"
    config = finetune.FinetuneConfig(epochs=epochs, eval_tweets=eval_tweets)
    try:
        report = finetune.finetune(start.weights, texts, out, config=config,
                                   served_offsets=calibration.served_log_offsets(start.path),
                                   log=lambda msg: console.print(msg, highlight=False))
    except ValueError as exc:
        raise fail(str(exc)) from None
    number = export.next_version(repository)
    export.install(out, repository, version=number)
    _report(report)
    print(f"installed as text_analysis version {number}: `streamsense model load {number}` serves it")


def _report(report: dict) -> None:
    table = Table("set", "n", "polar before", "polar after", "3-class before", "3-class after",
                  title=f"sentiment before and after ({report['user_train']} of your texts trained on, "
                        f"{report['replay']} of ours mixed in, {report['seconds']} s)")
    for name, before in report["before"].items():
        after = report["after"][name]
        table.add_row(name, str(before["n"]), *(f"{r[key]:.3f}" for key in ("polar_accuracy", "accuracy")
                                                for r in (before, after)))
    Console(file=sys.stdout, width=140).print(table)


def learn(
    every: Annotated[int, typer.Option(min=10, help="new rated reviews between rounds")] = 1000,
    epochs: Annotated[int, typer.Option(min=1, help="passes over the rated reviews per round")] = 1,
    alpha: Annotated[float, typer.Option(min=0.0001, max=0.5, help="a new version is served only when "
                                         "it wins with confidence 1 - alpha")] = 0.05,
    once: Annotated[bool, typer.Option(help="gather, run at most one round, exit")] = False,
    poll_s: Annotated[float, typer.Option(min=1, help="seconds between looks at the stream")] = 30.0,
    eval_tweets: Annotated[int, typer.Option(min=10, help="our held-out tweets scored per round")] = 1000,
    shadow: Annotated[float | None, typer.Option(min=0.001, max=1.0, help="instead of serving a version "
                                                 "that wins, shadow it on this share of the texts and "
                                                 "leave the switch to you")] = None,
) -> None:
    """The background learner: gather rated reviews from reviews.enriched, fine-tune the served
    version on them every N new ones, and serve the result only when it beats the served version
    with confidence (no restart), or shadow it (--shadow): on held-out rated reviews, then, until
    it wins or the next round, on each rated review that comes after its round. Needs the
    training extra."""
    import time

    from streams.learner import LearnerOptions, check_candidate, collect, learn_round, pending

    settings = local_settings()
    options = LearnerOptions(every=every, epochs=epochs, alpha=alpha, eval_tweets=eval_tweets, shadow=shadow)
    while True:
        try:
            new = collect(settings, keep=options.keep, max_seconds=max(5.0, poll_s))
        except Exception as exc:
            raise fail(f"cannot read {settings.topic_prefix}reviews.enriched from "
                       f"{settings.kafka_bootstrap}: {exc!r}") from None
        waiting = pending(settings)
        console.print(f"learner: {new} new rated reviews, {waiting} since the last round "
                      f"(a round every {every})")
        say = lambda msg: console.print(msg, highlight=False)  # noqa: E731
        try:
            if waiting >= every:
                learn_round(settings, options, log=say)
            elif new:
                check_candidate(settings, options, log=say)
        except (ImportError, RuntimeError, ValueError) as exc:
            raise fail(f"the learning round failed: {exc}") from None
        if once:
            return
        time.sleep(poll_s)
