"""The local Apache Kafka broker: jars from Maven Central, KRaft single node, bound to 127.0.0.1.

No Kafka server ships on PyPI, npm or Debian, so ``provision`` runs Maven on
``deploy/local/kafka/pom.xml`` (``dependency:copy-dependencies``) once and caches the jars;
``broker_service`` runs ``kafka.Kafka`` with ``java`` in combined broker+controller mode.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from streams.local.paths import repo_root
from streams.local.process import Service, ServiceError, port_in_use, run_step

__all__ = ["KAFKA_VERSION", "BrokerSecurity", "broker_service", "kafka_answers", "provision"]

# Newest Kafka that faust-streaming + aiokafka work with here; see README "Kafka version".
KAFKA_VERSION = "4.3.1"

_LOG4J2 = """\
rootLogger.level=INFO
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka
logger.kafka.level=WARN
logger.apache.name=org.apache.kafka
logger.apache.level=WARN
logger.started.name=kafka.server.KafkaRaftServer
logger.started.level=INFO
"""


def pom_path() -> Path:
    return repo_root() / "deploy" / "local" / "kafka" / "pom.xml"


def provision(libs_dir: Path, *, quiet: bool = True) -> Path:
    """Copy the broker's jars into ``libs_dir`` with Maven unless they are already there."""
    stamp = libs_dir / f".complete-{KAFKA_VERSION}"
    if stamp.exists():
        return libs_dir
    for tool in ("mvn", "java"):
        if shutil.which(tool) is None:
            raise ServiceError(f"`{tool}` not found: the local Kafka broker needs Java 17+ and Maven")
    if libs_dir.exists():
        shutil.rmtree(libs_dir)
    libs_dir.mkdir(parents=True)
    run_step(["mvn", "-B", *(["-q"] if quiet else []), "-f", str(pom_path()),
              "dependency:copy-dependencies", f"-Dkafka.version={KAFKA_VERSION}",
              f"-DoutputDirectory={libs_dir.resolve()}", "-DincludeScope=runtime"],
             what=f"fetching Kafka {KAFKA_VERSION} with Maven", quiet=quiet)
    stamp.write_text(KAFKA_VERSION)
    return libs_dir


@dataclass(frozen=True, slots=True)
class BrokerSecurity:
    """A SASL_SSL client listener (SCRAM) for the local broker.

    ``pem``: the broker's unencrypted PKCS#8 key and certificate chain in one PEM file;
    ``cafile``: the CA that signed it (the broker's truststore: it talks to itself over the
    same listener). The SCRAM user is created when the storage is formatted, so a broker first
    started without it must have its ``kafka/`` data removed. The KRaft controller listener
    stays PLAINTEXT on 127.0.0.1: Kafka's controllers take no SCRAM (their credentials live in
    the metadata they serve).
    """

    mechanism: str  # SCRAM-SHA-256 or SCRAM-SHA-512
    username: str
    password: str = field(repr=False)
    pem: Path
    cafile: Path
    client_kwargs: dict[str, object] = field(repr=False, default_factory=dict)  # for health checks

    def __post_init__(self) -> None:
        if not self.mechanism.startswith("SCRAM-"):
            raise ServiceError(f"the local broker's SASL_SSL listener takes SCRAM-SHA-256 or -512, "
                               f"not {self.mechanism}")
        for what, path in (("STREAMSENSE_KAFKA_BROKER_PEM", self.pem),
                           ("STREAMSENSE_KAFKA_SSL_CAFILE", self.cafile)):
            if not Path(path).is_file():
                raise ServiceError(f"the local SASL_SSL broker needs {what}: {path} is not a file")
        if any(c in self.username + self.password for c in '"\\'):
            raise ServiceError("the local broker's SCRAM user name and password cannot hold '\"' or '\\'")


def _server_properties(*, host: str, port: int, controller_port: int, data_dir: Path,
                       security: BrokerSecurity | None = None) -> str:
    listener = "SASL_SSL" if security else "PLAINTEXT"
    secured = [] if security is None else [
        f"sasl.enabled.mechanisms={security.mechanism}",
        f"sasl.mechanism.inter.broker.protocol={security.mechanism}",
        f"listener.name.sasl_ssl.{security.mechanism.lower()}.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{security.username}" password="{security.password}";',
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={Path(security.pem).resolve()}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={Path(security.cafile).resolve()}",
        "ssl.endpoint.identification.algorithm=https",
    ]
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@{host}:{controller_port}",
        f"listeners={listener}://{host}:{port},CONTROLLER://{host}:{controller_port}",
        f"advertised.listeners={listener}://{host}:{port}",
        "controller.listener.names=CONTROLLER",
        f"inter.broker.listener.name={listener}",
        f"listener.security.protocol.map={listener}:{listener},CONTROLLER:PLAINTEXT",
        *secured,
        f"log.dirs={data_dir.resolve()}",
        "num.partitions=4",
        # One node: internal topics (offsets, transactions) cannot have more replicas.
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=8",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=8",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        "auto.create.topics.enable=true",
        "log.retention.hours=168",
        "",
    ])


def broker_service(*, home: Path, libs_dir: Path, bootstrap: str, controller_port: int,
                   heap: str = "512m", security: BrokerSecurity | None = None) -> Service:
    """The broker as a :class:`Service`; formats its storage on first use.

    With ``security`` its client listener is SASL_SSL (SCRAM) instead of PLAINTEXT.
    """
    host, port_text = bootstrap.rsplit(":", 1)
    if "," in bootstrap or host not in ("127.0.0.1", "localhost"):
        raise ServiceError(
            f"the local broker binds 127.0.0.1 only; STREAMSENSE_KAFKA_BOOTSTRAP={bootstrap!r} "
            "points elsewhere (an existing cluster needs no `streamsense up --kafka`)"
        )
    host, port = "127.0.0.1", int(port_text)
    kafka_dir = home / "kafka"
    data_dir = kafka_dir / "data"
    kafka_dir.mkdir(parents=True, exist_ok=True)
    props = kafka_dir / "server.properties"
    props.touch(mode=0o600)  # the SCRAM password of the inter-broker login is in it
    props.chmod(0o600)
    props.write_text(_server_properties(host=host, port=port, controller_port=controller_port,
                                        data_dir=data_dir, security=security))
    log4j = kafka_dir / "log4j2.properties"
    log4j.write_text(_LOG4J2)
    java = ["java", f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j.resolve()}",
            "-cp", f"{libs_dir.resolve()}/*"]
    if not (data_dir / "meta.properties").exists():
        _format_storage(java, props, security)
    client = {} if security is None else security.client_kwargs
    return Service(
        name="kafka",
        argv=[*java, "kafka.Kafka", str(props.resolve())],
        run_dir=home / "run",
        ports=[(host, port), (host, controller_port)],
        health=lambda: kafka_answers(f"{host}:{port}", **client),
    )


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64 that does not start with '-'.

    Kafka's own ``Uuid.randomUuid`` avoids a leading dash too: the storage tool's argument
    parser would read such an id as an option (1 start in 64 failed before this).

    >>> all(not new_cluster_id().startswith("-") and len(new_cluster_id()) == 22 for _ in range(500))
    True
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_storage(java: list[str], props: Path, security: BrokerSecurity | None = None) -> None:
    args = ["kafka.tools.StorageTool", "format", "-t", new_cluster_id(), "-c", str(props.resolve())]
    if security is None:
        run_step([*java, *args], what="formatting Kafka storage")
        return
    # The SCRAM user's password must not be on a command line, where any local user reads it in
    # the process list: the storage tool's arguments go in a file (0600, next to the broker's
    # properties, which hold the same password) that the java launcher expands (@file).
    scram = f'{security.mechanism}=[name="{security.username}",password="{security.password}"]'
    argfile = props.with_name("format.args")
    argfile.touch(mode=0o600)
    argfile.chmod(0o600)
    argfile.write_text(" ".join(argfile_quote(a) for a in [*args, "--add-scram", scram]) + "\n")
    try:
        run_step([*java, f"@{argfile.resolve()}"], what="formatting Kafka storage",
                 secrets=[security.password])
    finally:
        argfile.unlink(missing_ok=True)


def argfile_quote(arg: str) -> str:
    """One argument for a java launcher argument file (taken literally inside single quotes).

    >>> print(argfile_quote('SCRAM-SHA-512=[name="u",password="p w"]'))
    'SCRAM-SHA-512=[name="u",password="p w"]'
    """
    if any(c in arg for c in "'\\\n\r"):
        raise ServiceError("a local broker setting holds a quote, backslash or line break, which the "
                           "broker's own configuration cannot carry either; choose another value")
    return f"'{arg}'"


def kafka_answers(bootstrap: str, *, timeout_s: float = 3.0, **client_kwargs: object) -> bool:
    """Whether the cluster answers a metadata request."""
    from aiokafka.client import AIOKafkaClient

    first = bootstrap.split(",")[0].strip()
    host, port = first.rsplit(":", 1)
    # A closed port answers at once; skip aiokafka there, it logs every refused connection.
    if not port_in_use(host, int(port)):
        return False

    async def probe() -> bool:
        client = AIOKafkaClient(bootstrap_servers=bootstrap,
                                request_timeout_ms=int(timeout_s * 1000), **client_kwargs)
        try:
            await asyncio.wait_for(client.bootstrap(), timeout_s)
            return bool(client.cluster.brokers())
        finally:
            await client.close()

    try:
        return asyncio.run(probe())
    except Exception:
        return False
