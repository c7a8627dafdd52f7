"""Model versions: which versions of ``text_analysis`` exist, which one Triton serves, and a
switch to another (or back) without restarting Triton or the workers.

Triton runs with ``--model-control-mode=explicit``; switching loads the model with its own
configuration plus a version policy naming the one version to serve. Triton loads the new
version next to the old, moves new requests to it once it is ready and unloads the old one, so
no request fails during a switch (in-flight ones finish on the old version). Every analysis
names the version that produced it (``model_info.json``), so every enriched record says which
model labelled it.

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

__all__ = ["MODEL", "ModelControl", "ModelVersion", "ModelVersionError", "history", "repository_versions"]

MODEL = "text_analysis"


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

    def served(self) -> list[int]:
        """The versions Triton serves now (ready)."""
        return sorted(int(entry["version"]) for entry in self.client.get_model_repository_index()
                      if entry.get("name") == self.model and entry.get("state") == "READY"
                      and str(entry.get("version", "")).isdigit())

    def load(self, version: int, *, record: bool = True) -> None:
        """Serve ``version`` only; returns once Triton reports it ready."""
        from tritonclient.utils import InferenceServerException

        if record and not history(self.home) and self.served():
            _record(self.home, self.served()[-1])  # what served before the first switch
        config = self.client.get_model_config(self.model)
        config["version_policy"] = {"specific": {"versions": [version]}}
        try:
            self.client.load_model(self.model, config=json.dumps(config))
        except InferenceServerException as exc:
            raise ModelVersionError(f"Triton could not load {self.model} version {version}: "
                                    f"{str(exc)[:500]}") from None
        deadline = time.monotonic() + self.timeout_s
        while not self.client.is_model_ready(self.model, str(version)):
            if time.monotonic() > deadline:
                raise ModelVersionError(f"{self.model} version {version} was not ready after "
                                        f"{self.timeout_s:.0f} s")
            time.sleep(0.5)
        if record:
            _record(self.home, version)

    def rollback(self) -> int:
        """Serve the version served before the last switch; returns it."""
        entries = history(self.home)
        if len(entries) < 2:
            raise ModelVersionError("no earlier version to roll back to (no switch recorded)")
        previous = int(entries[-2]["version"])
        self.load(previous)
        return previous
