"""deploy/: Prometheus config and rules checked by promtool (syntax and behaviour), Grafana
dashboards in sync with their generator, compose and Kubernetes manifests checked offline
(what can be without a Docker engine or a cluster), and the metrics catalogue's error kinds."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from deploy.grafana.dashboards import expressions, render
from streams.adapters.metrics import ERROR_KINDS, Metrics
from streams.local.kafka import KAFKA_VERSION
from streams.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMTOOL = shutil.which("promtool")


def _promtool(*args: str, cwd: Path = REPO) -> str:
    assert PROMTOOL, "promtool is missing: it comes with Debian's prometheus, which `make setup` installs"
    result = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_prometheus_configs_and_rules_pass_promtool():
    _promtool("check", "config", "deploy/prometheus/prometheus.yml")
    _promtool("check", "config", "--syntax-only", "deploy/compose/prometheus.yml")
    assert "SUCCESS: 10 rules found" in _promtool("check", "rules", "deploy/prometheus/rules.yml")


def test_alert_rules_fire_on_synthetic_series(tmp_path: Path):
    shutil.copy(DEPLOY / "prometheus" / "rules.yml", tmp_path / "rules.yml")
    shutil.copy(REPO / "tests" / "fixtures" / "prometheus_rules_test.yml", tmp_path / "rules_test.yml")
    assert "SUCCESS" in _promtool("test", "rules", "rules_test.yml", cwd=tmp_path)


def test_dashboard_json_is_what_the_generator_writes():
    written = {p.name: p.read_text() for p in (DEPLOY / "grafana" / "dashboards").glob("*.json")}
    assert written == render(), "run: python deploy/grafana/dashboards.py"
    uids = [json.loads(text)["uid"] for text in written.values()]
    assert len(set(uids)) == len(uids) == 4


def test_dashboards_query_only_metrics_that_exist():
    # Every streamsense_* name in a panel is one the workers export (Triton's are nv_*).
    families = {m.name for m in Metrics().registry.collect()}
    exported = families | {f"{n}_total" for n in families} | {f"{n}_{s}" for n in families
                                                            for s in ("bucket", "sum", "count")}
    used = {name for _, _, expr in expressions() for name in re.findall(r"\bstreamsense_[a-z_]+", expr)}
    assert used and used <= exported, used - exported


def test_every_error_kind_in_the_code_is_in_the_catalogue():
    kinds = set()
    for path in (REPO / "streams").rglob("*.py"):
        kinds |= set(re.findall(r'errors\.labels\(kind="([a-z_]+)"\)', path.read_text()))
    kinds |= {f"triton_{k}" for k in re.findall(r'return "([a-z]+)"',
                                                 (REPO / "streams/adapters/triton_client.py").read_text())}
    assert kinds and kinds <= set(ERROR_KINDS), kinds - set(ERROR_KINDS)


def _settings_from(env: dict[str, str]) -> Settings:
    fields = {name.upper() for name in Settings.model_fields}
    unknown = [k for k in env if k.removeprefix("STREAMSENSE_") not in fields or not k.startswith("STREAMSENSE_")]
    assert not unknown, f"not settings: {unknown}"
    return Settings.from_env(env)


def test_compose_file_is_consistent():
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"kafka", "triton", "worker", "prometheus", "grafana"}
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"  # the version the tests run
    settings = _settings_from(services["worker"]["environment"])
    assert settings.kafka_bootstrap == "kafka:9092" and settings.triton_url == "triton:8001"
    gpu = services["triton"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert "--model-config-name=gpu" in " ".join(services["triton"]["command"])
    for service in services.values():  # every bind-mounted path exists in the repository
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / "compose" / source).resolve().exists(), source
    for port in (p for s in services.values() for p in s.get("ports", [])):
        assert port.startswith("127.0.0.1:"), port  # published on loopback only
    assert (REPO / "triton_repo" / "text_analysis" / "configs" / "gpu.pbtxt").exists()


def test_kubernetes_manifests_are_consistent():
    docs = [d for p in sorted((DEPLOY / "k8s").glob("*.yaml")) if p.name != "kustomization.yaml"
            for d in yaml.safe_load_all(p.read_text()) if d]
    by_kind = {}
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
        by_kind.setdefault(doc["kind"], []).append(doc)
    config = by_kind["ConfigMap"][0]["data"]
    settings = _settings_from({**config, "STREAMSENSE_KAFKA_SASL_PASSWORD": "from-the-secret"})
    assert settings.kafka_security_protocol == "SASL_SSL"
    deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    worker = deployments["streamsense-worker"]["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports == {"metrics": settings.metrics_port} and not settings.web_enabled
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in worker["env"]}
    assert secrets == {"STREAMSENSE_KAFKA_SASL_PASSWORD": "streamsense-kafka", "STREAMSENSE_STATE_KEY": "streamsense-state"}
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind["NetworkPolicy"]}
    assert {"streamsense-worker", "triton"} <= set(policies)
    assert all(not p.get("ingress") or all(rule.get("from") for rule in p["ingress"]) for p in policies.values())
    triton = deployments["triton"]["spec"]["template"]["spec"]["containers"][0]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    scaler = by_kind["ScaledObject"][0]["spec"]
    assert scaler["maxReplicaCount"] == settings.topic_partitions  # workers beyond partitions idle
    assert "streamsense_consumer_lag" in scaler["triggers"][0]["metadata"]["query"]
    listed = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in (DEPLOY / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")


def test_grafana_provisioning_points_at_the_dashboards():
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"
    boards = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "streamsense.yml").read_text())
    compose = (DEPLOY / "compose" / "docker-compose.yml").read_text()
    assert f"../grafana/dashboards:{boards['providers'][0]['options']['path']}:ro" in compose


def test_the_locks_pin_every_dependency_with_hashes():
    import tomllib

    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]

    def pinned(lock: str) -> dict[str, str]:
        text = (DEPLOY / "locks" / lock).read_text()
        entries = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n?)+)", text, re.M)
        assert len(entries) == len(re.findall(r"^[A-Za-z0-9]", text, re.M)), f"{lock}: a pin without hashes"
        return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version, _ in entries}

    def names(requirements: list[str]) -> set[str]:
        return {re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0]).lower() for r in requirements}

    worker, dev = pinned("worker.txt"), pinned("dev.txt")
    assert names(project["dependencies"]) <= set(worker)
    extras = project["optional-dependencies"]
    assert names(project["dependencies"] + extras["dev"] + extras["train"]) <= set(dev)
    assert "torch" not in worker and "transformers" not in worker  # the worker image stays small
    assert dev["faust-streaming"] == worker["faust-streaming"] == "0.15.3"
    assert pinned("triton.txt") == {"nvidia-pytriton": "0.7.0"}
    assert "--require-hashes -r deploy/locks/worker.txt" in (DEPLOY / "compose" / "Dockerfile").read_text()
