"""Model versions: which versions of ``text_analysis`` exist, which one Triton serves, and a
switch to another (or back) without restarting Triton or the workers.

Triton runs with ``--model-control-mode=explicit``; switching loads the model with its own
configuration plus a version policy naming the one version to serve. Triton loads the new
version next to the old, moves new requests to it once it is ready and unloads the old one, so
no request fails during a switch (in-flight ones finish on the old version). Every analysis
names the version that produced it (``model_info.json``), so every enriched record says which
model labelled it.

A candidate can be *shadowed* first (``shadow``): Triton then holds two versions, and the
model's configuration says which one is served and which one is the shadow (parameters
``streamsense_served``, ``streamsense_shadow``, ``streamsense_shadow_share``). Workers read that
(:func:`route_of`), name the served version in every request and send a share of the texts to
the shadow too, to compare (``streams.agents.shadow``). ``load`` ends a shadow; so does a Triton
restart (the shadow is not in the switch history).

The history of switches (for ``rollback``) is kept in ``<home>/model-versions.json``; the local
stack re-applies the last switch when it starts Triton again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from streams.errors import StreamSenseError

__all__ = ["MODEL", "ModelControl", "ModelRoute", "ModelVersion", "ModelVersionError", "history",
           "repository_versions", "route_of"]

MODEL = "text_analysis"
SERVED, SHADOW, SHARE = "streamsense_served", "streamsense_shadow", "streamsense_shadow_share"


@dataclass(frozen=True)
class ModelRoute:
    """Which loaded version serves, and which one (if any) shadows it on a share of the texts."""

    served: int | None  # None: nothing is loaded
    shadow: int | None = None
    share: float = 0.0


def route_of(config: dict, ready: list[int]) -> ModelRoute:
    """The route a model's configuration states, checked against the versions ready now.

    >>> config = {"parameters": {SERVED: {"string_value": "1"}, SHADOW: {"string_value": "3"},
    ...                          SHARE: {"string_value": "0.25"}}}
    >>> route_of(config, [1, 3])
    ModelRoute(served=1, shadow=3, share=0.25)
    >>> route_of({}, [2, 3])  # no statement (a plain Triton): the newest, as Triton would choose
    ModelRoute(served=3, shadow=None, share=0.0)
    >>> route_of(config, [3])  # mid-switch: only what is ready can serve
    ModelRoute(served=3, shadow=None, share=0.0)
    """
    params = {k: str(v.get("string_value", "")) for k, v in (config.get("parameters") or {}).items()
              if isinstance(v, dict)}

    def number(key: str) -> int | None:
        value = params.get(key, "").strip()
        return int(value) if value.isdigit() else None

    served = number(SERVED)
    if served not in ready:
        served = max(ready) if ready else None
    shadow = number(SHADOW)
    if shadow not in ready or shadow == served:
        return ModelRoute(served)
    try:
        share = min(1.0, max(0.0, float(params.get(SHARE, "0"))))
    except ValueError:
        share = 0.0
    return ModelRoute(served, shadow, share)


class ModelVersionError(StreamSenseError):
    """A version that does not exist, or that Triton could not load."""


@dataclass(frozen=True)
class ModelVersion:
    number: int
    name: str  # the version string each analysis carries (model_info.json)
    path: Path
    # The torch weights it was exported from (a folder with complete.json), to fine-tune it
    # further; None when they are not on this machine.
    weights: Path | None = None


def repository_versions(repository: Path, model: str = MODEL) -> list[ModelVersion]:
    """The installed versions of ``model`` in a local model repository, oldest first."""
    out = []
    for folder in sorted((repository / model).iterdir() if (repository / model).is_dir() else [],
                         key=lambda p: (len(p.name), p.name)):
        info = folder / "model_info.json"
        if folder.is_dir() and folder.name.isdigit() and info.exists():
            meta = json.loads(info.read_text())
            weights = Path(meta["weights"]) if meta.get("weights") else None
            if weights is not None and not (weights / "complete.json").exists():
                weights = None
            out.append(ModelVersion(int(folder.name), meta["version"], folder, weights))
    return out


def history(home: Path) -> list[dict]:
    path = home / "model-versions.json"
    return json.loads(path.read_text()) if path.exists() else []


def _record(home: Path, version: int) -> None:
    path = home / "model-versions.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [*history(home), {"version": version, "at": datetime.now(UTC).isoformat()}]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries[-100:], indent=1))
    tmp.replace(path)


class ModelControl:
    """Triton's model repository API (HTTP) for one model."""

    def __init__(self, http_url: str, *, home: Path, model: str = MODEL, timeout_s: float = 120.0) -> None:
        import tritonclient.http as httpclient

        self.client = httpclient.InferenceServerClient(
            http_url.removeprefix("http://"), connection_timeout=timeout_s, network_timeout=timeout_s)
        self.home = home
        self.model = model
        self.timeout_s = timeout_s

    def ready(self) -> list[int]:
        """The versions Triton holds ready now (the served one, and a shadow if any)."""
        return sorted(int(entry["version"]) for entry in self.client.get_model_repository_index()
                      if entry.get("name") == self.model and entry.get("state") == "READY"
                      and str(entry.get("version", "")).isdigit())

    def route(self) -> ModelRoute:
        return route_of(self.client.get_model_config(self.model), self.ready())

    def served(self) -> list[int]:
        """The version Triton serves now (empty when none is ready)."""
        served = self.route().served
        return [] if served is None else [served]

    def load(self, version: int, *, record: bool = True) -> None:
        """Serve ``version`` only (ending any shadow); returns once Triton reports it ready."""
        if record and not history(self.home) and (before := self.served()):
            _record(self.home, before[-1])  # what served before the first switch
        self._apply([version], {SERVED: version}, wait_for=version)
        if record:
            _record(self.home, version)

    def shadow(self, version: int, *, share: float) -> int:
        """Load ``version`` next to the served one, which keeps serving; workers send ``share``
        of their texts to both and compare. Returns the served version."""
        served = self.route().served
        if served is None:
            raise ModelVersionError(f"Triton serves no version of {self.model} to shadow")
        if version == served:
            raise ModelVersionError(f"version {version} is the served one: shadow another")
        self._apply([served, version], {SERVED: served, SHADOW: version, SHARE: share}, wait_for=version)
        return served

    def stop_shadow(self) -> int | None:
        """Unload the shadow (the served version stays); the version stopped, or None."""
        route = self.route()
        if route.shadow is None or route.served is None:
            return None
        self._apply([route.served], {SERVED: route.served}, wait_for=route.served)
        return route.shadow

    def _apply(self, versions: list[int], parameters: dict, *, wait_for: int) -> None:
        from tritonclient.utils import InferenceServerException

        config = self.client.get_model_config(self.model)
        config["version_policy"] = {"specific": {"versions": versions}}
        kept = {k: v for k, v in (config.get("parameters") or {}).items() if k not in (SERVED, SHADOW, SHARE)}
        config["parameters"] = {**kept, **{k: {"string_value": str(v)} for k, v in parameters.items()}}
        try:
            self.client.load_model(self.model, config=json.dumps(config))
        except InferenceServerException as exc:
            raise ModelVersionError(f"Triton could not load {self.model} version(s) "
                                    f"{', '.join(map(str, versions))}: {str(exc)[:500]}") from None
        deadline = time.monotonic() + self.timeout_s
        while not self.client.is_model_ready(self.model, str(wait_for)):
            if time.monotonic() > deadline:
                raise ModelVersionError(f"{self.model} version {wait_for} was not ready after "
                                        f"{self.timeout_s:.0f} s")
            time.sleep(0.5)

    def rollback(self) -> int:
        """Serve the version served before the last switch; returns it."""
        entries = history(self.home)
        if len(entries) < 2:
            raise ModelVersionError("no earlier version to roll back to (no switch recorded)")
        previous = int(entries[-2]["version"])
        self.load(previous)
        return previous
