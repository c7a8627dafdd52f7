"""A local Prometheus (Debian's ``prometheus`` package, installed by ``make setup``) scraping the
workers and Triton of the local stack, with the alerting rules of ``deploy/prometheus``."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from streams.local.paths import repo_root
from streams.local.process import Service

__all__ = ["binary", "prometheus_ready", "prometheus_service"]


def binary() -> str | None:
    return shutil.which("prometheus")


def prometheus_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def prometheus_service(*, home: Path, port: int, targets: Mapping[str, Sequence[str]],
                       scrape_interval_s: float = 5.0) -> Service:
    """Prometheus on 127.0.0.1:``port``, its config, rules and data under ``home/prometheus``.

    ``targets``: job -> host:port list (the worker job is ``streamsense-workers``, as the rules
    and dashboards expect). The config is written on every call, so a restart picks up new ports.
    """
    exe = binary()
    if exe is None:
        raise FileNotFoundError("Debian's prometheus is not installed: `make setup` installs it "
                                "(deploy/local/system-deps.sh)")
    folder = home / "prometheus"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(repo_root() / "deploy" / "prometheus" / "rules.yml", folder / "rules.yml")
    interval = f"{scrape_interval_s:g}s"
    config = {"global": {"scrape_interval": interval, "evaluation_interval": interval},
              "rule_files": ["rules.yml"],
              "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(hosts)}]}
                                 for job, hosts in targets.items()]}
    (folder / "prometheus.yml").write_text(json.dumps(config, indent=1))  # JSON is YAML
    host = "127.0.0.1"
    return Service(
        name="prometheus",
        argv=[exe, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
              f"--web.listen-address={host}:{port}", "--storage.tsdb.retention.time=2d"],
        run_dir=home / "run",
        ports=[(host, port)],
        health=lambda: prometheus_ready(f"http://{host}:{port}"),
    )
