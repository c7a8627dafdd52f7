"""The local stack from Settings: provision, start, stop and describe Kafka and Triton."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from streams.local import kafka, prometheus, triton
from streams.local.paths import repo_root
from streams.local.process import Service, ServiceError, free_port
from streams.local.settings import LocalStackSettings

__all__ = ["LocalStack", "ServiceStatus"]


def private_stack_env(home: Path) -> dict[str, str]:
    """STREAMSENSE_* variables for a private stack on free ports under ``home`` (tests and
    benchmarks: nothing collides with a stack the user runs). Jars and Triton's runtime come
    from the repository's cache (``make setup`` fills it)."""
    repo = repo_root()
    return {
        "STREAMSENSE_HOME": str(home),
        "STREAMSENSE_CACHE_DIR": str(repo / ".streamsense"),
        "STREAMSENSE_TRITON_MODEL_REPOSITORY": str(repo / "triton_repo"),
        "STREAMSENSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "STREAMSENSE_KAFKA_CONTROLLER_PORT": str(free_port()),
        "STREAMSENSE_TRITON_URL": f"127.0.0.1:{free_port()}",
        "STREAMSENSE_TRITON_HTTP_URL": f"127.0.0.1:{free_port()}",
        "STREAMSENSE_TRITON_METRICS_PORT": str(free_port()),
        "STREAMSENSE_METRICS_PORT": str(free_port()),
        "STREAMSENSE_WEB_PORT": str(free_port()),
        "STREAMSENSE_PROMETHEUS_PORT": str(free_port()),
    }


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    name: str
    pid: int | None
    healthy: bool
    address: str
    log: str


class LocalStack:
    """Kafka and Triton for one machine, with data, logs and PID files under ``settings.home``."""

    def __init__(self, settings: LocalStackSettings) -> None:
        self.settings = settings

    @property
    def kafka_libs(self):
        return self.settings.cache_dir / "kafka" / "libs"

    @property
    def triton_runtime(self):
        return self.settings.cache_dir / "triton"

    def provision(self, *, quiet: bool = True) -> None:
        """Fetch the Kafka jars and prepare Triton's runtime (fast when already cached)."""
        kafka.provision(self.kafka_libs, quiet=quiet)
        triton.provision(self.triton_runtime, quiet=quiet)

    def kafka(self) -> Service:
        """The broker: PLAINTEXT, or SASL_SSL (SCRAM) when the settings ask clients for it."""
        s = self.settings
        security = None
        if s.kafka_security_protocol == "SASL_SSL":
            if s.kafka_broker_pem is None or s.kafka_ssl_cafile is None:
                raise ServiceError("a local SASL_SSL broker needs STREAMSENSE_KAFKA_BROKER_PEM (its key and "
                                   "certificate) and STREAMSENSE_KAFKA_SSL_CAFILE (the CA that signed it)")
            assert s.kafka_sasl_mechanism and s.kafka_sasl_username and s.kafka_sasl_password
            security = kafka.BrokerSecurity(
                mechanism=s.kafka_sasl_mechanism, username=s.kafka_sasl_username,
                password=s.kafka_sasl_password.get_secret_value(), pem=s.kafka_broker_pem,
                cafile=s.kafka_ssl_cafile, client_kwargs=_security(s))
        elif s.kafka_security_protocol != "PLAINTEXT":
            raise ServiceError(f"the local broker serves PLAINTEXT or SASL_SSL, not "
                               f"{s.kafka_security_protocol} (an existing cluster needs no local broker)")
        return kafka.broker_service(home=s.home, libs_dir=self.kafka_libs,
                                    bootstrap=s.kafka_bootstrap, controller_port=s.kafka_controller_port,
                                    heap=s.kafka_heap, security=security)

    def triton(self) -> Service:
        s = self.settings
        return triton.triton_service(home=s.home, triton_dir=self.triton_runtime,
                                     model_repository=s.triton_model_repository,
                                     http_port=s.triton_http_port, grpc_port=s.triton_grpc_port,
                                     metrics_port=s.triton_metrics_port)

    def prometheus(self, *, workers: int = 4) -> Service:
        """Prometheus scraping the first ``workers`` workers' metrics ports and Triton."""
        s = self.settings
        workers_at = [f"{s.metrics_host}:{s.metrics_port + i}" for i in range(workers)]
        return prometheus.prometheus_service(
            home=s.home, port=s.prometheus_port,
            targets={"streamsense-workers": workers_at, "triton": [f"127.0.0.1:{s.triton_metrics_port}"]})

    def services(self, *, with_kafka: bool = True, with_triton: bool = True,
                 with_prometheus: bool = False) -> list[Service]:
        return (([self.kafka()] if with_kafka else []) + ([self.triton()] if with_triton else [])
                + ([self.prometheus()] if with_prometheus else []))

    def up(self, *, with_kafka: bool = True, with_triton: bool = True,
           with_prometheus: bool = False) -> dict[str, int]:
        """Start what is not running; returns ``{name: pid}`` once all are healthy.

        If one service fails, the ones this call started are stopped again.
        """
        started: list[Service] = []
        pids: dict[str, int] = {}
        try:
            for service in self.services(with_kafka=with_kafka, with_triton=with_triton,
                                         with_prometheus=with_prometheus):
                was_running = service.pid() is not None
                pids[service.name] = service.start(timeout_s=self.settings.startup_timeout_s)
                if not was_running:
                    started.append(service)
        except BaseException:
            for service in reversed(started):
                service.stop()
            raise
        return pids

    def down(self) -> list[str]:
        """Stop every service that runs from this home (workers first); returns their names."""
        run_dir = self.settings.home / "run"
        workers = sorted(p.stem for p in run_dir.glob("worker-*.pid")) if run_dir.exists() else []
        return [name for name in (*workers, "prometheus", "triton", "kafka") if self._stoppable(name).stop()]

    def _stoppable(self, name: str) -> Service:
        # Stopping needs only the PID file, not a provisioned runtime.
        return Service(name=name, argv=[], run_dir=self.settings.home / "run", health=lambda: True)

    def status(self) -> list[ServiceStatus]:
        s = self.settings
        out = []
        kafka_pid = self._stoppable("kafka").pid()
        out.append(ServiceStatus(
            "kafka", kafka_pid,
            kafka.kafka_answers(s.kafka_bootstrap, **_security(s)), s.kafka_bootstrap,
            str(s.home / "run" / "kafka.log")))
        triton_pid = self._stoppable("triton").pid()
        out.append(ServiceStatus(
            "triton", triton_pid, triton.triton_ready(s.triton_http_url),
            f"grpc {s.triton_url}, http {s.triton_http_url}, metrics :{s.triton_metrics_port}",
            str(s.home / "run" / "triton.log")))
        prometheus_pid = self._stoppable("prometheus").pid()
        if prometheus_pid is not None:
            url = f"http://127.0.0.1:{s.prometheus_port}"
            out.append(ServiceStatus("prometheus", prometheus_pid, prometheus.prometheus_ready(url), url,
                                     str(s.home / "run" / "prometheus.log")))
        return out


def _security(settings: LocalStackSettings) -> dict[str, object]:
    kwargs = settings.kafka_client_kwargs()
    kwargs.pop("bootstrap_servers")
    return kwargs
