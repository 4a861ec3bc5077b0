"""A real Apache Kafka (KRaft) cluster of 1 or 3 local processes, from Maven Central jars.

Each node is a combined broker + controller with its own directory::

    <base>/node-<id>/server.properties   KRaft configuration written here
    <base>/node-<id>/log4j2.xml          broker logging -> logs/server.log
    <base>/node-<id>/data/               log.dirs
    <base>/node-<id>/logs/               server.log, stdout.log

With ``credentials`` (what ``sagaline dev up`` and the test session use) the nodes
listen with SASL/SCRAM-SHA-512 over TLS and run KRaft's StandardAuthorizer (see
``kafka_security``); without, PLAINTEXT with no authorizer (``dev up --insecure``).

One node: replication factor 1 everywhere (transactions work on one broker).
Three nodes: replication factor 3, ``min.insync.replicas=2``, so one node can be
SIGKILLed and restarted by index while the cluster keeps serving transactions.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sagaline.orchestrator.config import KafkaSecurity
from sagaline.orchestrator.devenv.credentials import ADMIN, StackCredentials, write_private
from sagaline.orchestrator.devenv.errors import DevEnvError, StartupError
from sagaline.orchestrator.devenv.kafka_dist import (
    KafkaDistribution,
    ensure_kafka_distribution,
    java_executable,
)
from sagaline.orchestrator.devenv.kafka_security import (
    admin_security,
    ensure_scram_users,
    format_scram_args,
    listener_properties,
)
from sagaline.orchestrator.devenv.ports import LOOPBACK, ensure_port_free, free_port
from sagaline.orchestrator.devenv.processes import (
    kill_tree,
    pid_alive,
    pid_owned_by,
    run_concurrently,
    wait_pid_exit,
)
from sagaline.orchestrator.devenv.progress import report
from sagaline.orchestrator.devenv.readiness import wait_for_kafka

__all__ = ["DEFAULT_HEAP", "KafkaNode", "LocalKafka", "new_cluster_id"]

DEFAULT_HEAP = "512m"
#: "1" makes every LocalKafka of this process and its children quick_jit (the test
#: session sets it, so that the `sagaline dev up` its tests run starts like its fixtures)
QUICK_JIT_ENV = "SAGALINE_KAFKA_QUICK_JIT"
_CLUSTER_FILE = "cluster.json"

_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by sagaline's launcher: broker logs go to a file, nothing to the console. -->
<Configuration status="warn">
  <Appenders>
    <RollingFile name="server" fileName="{logs}/server.log" filePattern="{logs}/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="64 MB"/>
      <DefaultRolloverStrategy max="2"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="server"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="org.apache.kafka.metadata" level="WARN"/>
    <Logger name="kafka.log.LogCleaner" level="WARN"/>
  </Loggers>
</Configuration>
"""


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class KafkaNode:
    """One combined broker + controller."""

    node_id: int
    broker_port: int
    controller_port: int
    directory: Path

    @property
    def properties_file(self) -> Path:
        return self.directory / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.directory / "logs" / "server.log"

    @property
    def stdout_file(self) -> Path:
        return self.directory / "logs" / "stdout.log"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"


class LocalKafka:
    """A Kafka cluster of ``brokers`` (1 or 3) local JVM processes under ``base_dir``.

    Ports, cluster id and node layout are saved in ``base_dir/cluster.json`` so that
    the same directory restarts the same cluster (after :meth:`stop` or a crash).
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        brokers: int = 1,
        broker_ports: list[int] | None = None,
        heap: str = DEFAULT_HEAP,
        distribution: KafkaDistribution | None = None,
        quick_jit: bool = False,
        credentials: StackCredentials | None = None,
    ) -> None:
        """``quick_jit`` runs the JVMs with the C1 compiler only: about 40 % less CPU to
        start (3 nodes ready in half the time on 2 cores) at some cost in peak throughput;
        test fixtures use it (and, through ``SAGALINE_KAFKA_QUICK_JIT=1``, the dev stacks
        their tests start), ``sagaline dev up`` and benchmarks do not."""
        if brokers not in (1, 3):
            raise DevEnvError("a local Kafka cluster has 1 or 3 brokers")
        self.base_dir = base_dir.resolve()
        self.heap = heap
        self.quick_jit = quick_jit or os.environ.get(QUICK_JIT_ENV) == "1"
        self.credentials = credentials
        self._distribution = distribution
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._pids: dict[int, int] = {}
        self._lock = threading.Lock()
        saved = self._load()
        if saved is not None and len(saved[1]) != brokers:
            raise DevEnvError(
                f"{self.base_dir} holds a {len(saved[1])}-broker cluster, not {brokers}"
            )
        if saved is not None and broker_ports is None:
            self.cluster_id, self.nodes = saved
        else:
            # New cluster, or the saved one moved to other ports (same id and directories).
            self.cluster_id = saved[0] if saved is not None else new_cluster_id()
            self.nodes = self._plan(brokers, broker_ports)

    # -- layout ---------------------------------------------------------------

    def _plan(self, brokers: int, broker_ports: list[int] | None) -> tuple[KafkaNode, ...]:
        if broker_ports is not None and len(broker_ports) != brokers:
            raise DevEnvError(f"expected {brokers} broker ports, got {len(broker_ports)}")
        nodes = []
        for index in range(brokers):
            port = broker_ports[index] if broker_ports else 0
            nodes.append(
                KafkaNode(
                    node_id=index + 1,
                    broker_port=port or free_port(),
                    controller_port=free_port(),
                    directory=self.base_dir / f"node-{index + 1}",
                )
            )
        return tuple(nodes)

    def _load(self) -> tuple[str, tuple[KafkaNode, ...]] | None:
        path = self.base_dir / _CLUSTER_FILE
        if not path.is_file():
            return None
        raw = json.loads(path.read_text(encoding="utf-8"))
        nodes = tuple(
            KafkaNode(
                node_id=int(n["node_id"]),
                broker_port=int(n["broker_port"]),
                controller_port=int(n["controller_port"]),
                directory=Path(n["directory"]),
            )
            for n in raw["nodes"]
        )
        return str(raw["cluster_id"]), nodes

    def _save(self) -> None:
        payload = {
            "cluster_id": self.cluster_id,
            "secured": self.credentials is not None,
            "nodes": [
                {
                    "node_id": n.node_id,
                    "broker_port": n.broker_port,
                    "controller_port": n.controller_port,
                    "directory": str(n.directory),
                }
                for n in self.nodes
            ],
        }
        self.base_dir.mkdir(parents=True, exist_ok=True)
        (self.base_dir / _CLUSTER_FILE).write_text(json.dumps(payload, indent=2), encoding="utf-8")

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{LOOPBACK}:{n.broker_port}" for n in self.nodes)

    @property
    def security(self) -> KafkaSecurity:
        """How the admin principal connects (PLAINTEXT when not secured)."""
        if self.credentials is None:
            return KafkaSecurity()
        return admin_security(self.credentials)

    @property
    def version(self) -> str:
        return self.distribution.version

    @property
    def distribution(self) -> KafkaDistribution:
        if self._distribution is None:
            self._distribution = ensure_kafka_distribution()
        return self._distribution

    def pid(self, index: int) -> int | None:
        """The pid of node ``index`` (0-based) if it runs."""
        node = self.nodes[index]
        pid = self._pids.get(node.node_id)
        if pid is not None and pid_alive(pid):
            return pid
        found = _read_pid_file(node)
        if found is not None and pid_owned_by(found, str(node.directory)):
            self._pids[node.node_id] = found
            return found
        return None

    def is_running(self, index: int | None = None) -> bool:
        indexes = range(len(self.nodes)) if index is None else [index]
        return all(self.pid(i) is not None for i in indexes)

    # -- configuration ----------------------------------------------------------

    def _properties(self, node: KafkaNode) -> str:
        replication = len(self.nodes)
        min_isr = 2 if replication >= 3 else 1
        voters = ",".join(f"{n.node_id}@{LOOPBACK}:{n.controller_port}" for n in self.nodes)
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": (
                f"PLAINTEXT://{LOOPBACK}:{node.broker_port},"
                f"CONTROLLER://{LOOPBACK}:{node.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{node.broker_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.data_dir),
            "num.partitions": "1",
            "default.replication.factor": str(replication),
            "min.insync.replicas": str(min_isr),
            "offsets.topic.replication.factor": str(replication),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(replication),
            "transaction.state.log.min.isr": str(min_isr),
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": str(replication),
            "share.coordinator.state.topic.min.isr": str(min_isr),
            "group.initial.rebalance.delay.ms": "0",
            # A restarted node re-registers only once its previous session expired
            # (default 9 s); a dead node is fenced after the same time.
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "1000",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "log.retention.hours": "168",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        if self.credentials is not None:
            settings.update(
                listener_properties(
                    self.credentials, node.broker_port, node.controller_port, LOOPBACK
                )
            )
        header = "# Written by sagaline (orchestrator/devenv/kafka.py); rewritten on every start.\n"
        return header + "".join(f"{key}={value}\n" for key, value in settings.items())

    def _write_files(self, node: KafkaNode) -> None:
        (node.directory / "logs").mkdir(parents=True, exist_ok=True)
        node.data_dir.mkdir(parents=True, exist_ok=True)
        # owner-only: a secured node's file holds the admin password
        write_private(node.properties_file, self._properties(node))
        (node.directory / "log4j2.xml").write_text(
            _LOG4J2.replace("{logs}", str(node.directory / "logs")), encoding="utf-8"
        )

    def _java(self, node: KafkaNode, heap: str, main: str, *args: str) -> list[str]:
        return [
            java_executable(),
            f"-Xmx{heap}",
            "-Xms64m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={node.directory / 'log4j2.xml'}",
            f"-Dkafka.logs.dir={node.directory / 'logs'}",
            f"-Dsagaline.node={node.directory}",
            "-cp",
            self.distribution.classpath,
            main,
            *args,
        ]

    def _format(self, node: KafkaNode) -> None:
        if (node.data_dir / "meta.properties").is_file():
            return
        command = self._java(
            node,
            "256m",
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={self.cluster_id}",  # an id may start with "-"
            "-c",
            str(node.properties_file),
            *(format_scram_args(self.credentials) if self.credentials else []),
        )
        result = subprocess.run(
            [command[0], "-XX:TieredStopAtLevel=1", *command[1:]],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            output = result.stdout + result.stderr
            if self.credentials is not None:  # the tool may echo its --add-scram argument
                output = output.replace(self.credentials.kafka_passwords[ADMIN], "***")
            tail = output.strip().splitlines()[-3:]
            raise StartupError(f"kafka storage format failed for node {node.node_id}: {tail}")

    # -- lifecycle -------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> float:
        """Start every node that is not running and wait until transactions work.

        Returns the seconds until ready. Raises :class:`PortInUseError` when a port is
        taken by someone else, :class:`StartupError` when a broker dies or times out.
        """
        started = time.monotonic()
        _ = self.distribution
        self._check_security_mode()
        for index, node in enumerate(self.nodes):
            if self.pid(index) is None:
                ensure_port_free(node.broker_port)
                ensure_port_free(node.controller_port)
        self._save()
        pending = [i for i in range(len(self.nodes)) if self.pid(i) is None]
        for index in pending:
            self._write_files(self.nodes[index])
        run_concurrently([functools.partial(self._format, self.nodes[i]) for i in pending])
        for index in pending:
            self._launch(index)
        if pending:
            report("kafka", f"started {len(pending)} node(s); waiting for {self.bootstrap_servers}")
        self.wait_ready(timeout=max(1.0, timeout - (time.monotonic() - started)))
        if self.credentials is not None:
            ensure_scram_users(self.bootstrap_servers, self.credentials)
        seconds = time.monotonic() - started
        report("kafka", f"ready at {self.bootstrap_servers} in {seconds:.1f} s", done=True)
        return seconds

    def _check_security_mode(self) -> None:
        """A cluster formatted without SCRAM users cannot become secured (and back)."""
        path = self.base_dir / _CLUSTER_FILE
        formatted = any((n.data_dir / "meta.properties").is_file() for n in self.nodes)
        if not (formatted and path.is_file()):
            return
        was = bool(json.loads(path.read_text(encoding="utf-8")).get("secured", False))
        if was != (self.credentials is not None):
            before, now = ("secured", "insecure") if was else ("insecure", "secured")
            raise DevEnvError(
                f"the Kafka in {self.base_dir} was created {before} and cannot start {now}; "
                "run `sagaline dev down --purge` first (its data is lost)"
            )

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Wait until all nodes are registered and a transactional producer initialises."""
        return wait_for_kafka(
            self.bootstrap_servers,
            expected_brokers=len(self.nodes),
            timeout=timeout,
            liveness=self._liveness,
            extra=self.security.client_config(),
        )

    def _liveness(self) -> str | None:
        for index, node in enumerate(self.nodes):
            if self.pid(index) is None:
                return (
                    f"kafka node {node.node_id} exited during start-up; "
                    f"last log lines: {_tail(node.log_file, node.stdout_file)}"
                )
        return None

    def _launch(self, index: int) -> None:
        node = self.nodes[index]
        command = self._java(node, self.heap, "kafka.Kafka", str(node.properties_file))
        if self.quick_jit:
            command.insert(1, "-XX:TieredStopAtLevel=1")
        with open(node.stdout_file, "ab") as out:
            proc = subprocess.Popen(
                command,
                cwd=node.directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with self._lock:
            self._procs[node.node_id] = proc
            self._pids[node.node_id] = proc.pid
        (node.directory / "kafka.pid").write_text(str(proc.pid), encoding="ascii")

    def start_node(self, index: int, *, wait: bool = True, timeout: float = 120.0) -> None:
        """(Re)start node ``index`` (0-based) after :meth:`kill` or :meth:`stop_node`."""
        if self.pid(index) is not None:
            return
        node = self.nodes[index]
        ensure_port_free(node.broker_port)
        ensure_port_free(node.controller_port)
        self._write_files(node)
        self._launch(index)
        if wait:
            self.wait_ready(timeout)

    def kill(self, index: int = 0) -> None:
        """SIGKILL node ``index`` (a crash: no controlled shutdown, no flush)."""
        pid = self.pid(index)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self._reap(index, pid, 30.0)

    def stop_node(self, index: int, timeout: float = 30.0) -> bool:
        """SIGTERM node ``index``, wait, SIGKILL after ``timeout``; True if it stopped cleanly."""
        pid = self.pid(index)
        if pid is None:
            return True
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return True
        clean = self._reap(index, pid, timeout)
        if not clean:
            kill_tree(pid)
            self._reap(index, pid, 10.0)
        return clean

    def restart(self, index: int = 0, *, crash: bool = False, timeout: float = 120.0) -> None:
        """Stop (or SIGKILL when ``crash``) node ``index``, start it again and wait."""
        if crash:
            self.kill(index)
        else:
            self.stop_node(index)
        self.start_node(index, wait=True, timeout=timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every node: SIGTERM all, wait, SIGKILL those still running after ``timeout``."""
        running = [(i, self.pid(i)) for i in range(len(self.nodes))]
        for _, pid in running:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for index, pid in running:
            if pid is None:
                continue
            if not self._reap(index, pid, max(0.1, deadline - time.monotonic())):
                kill_tree(pid)
                self._reap(index, pid, 10.0)

    def kill_all(self) -> None:
        """SIGKILL every node (fast teardown for throw-away clusters)."""
        for index in range(len(self.nodes)):
            self.kill(index)

    def _reap(self, index: int, pid: int, timeout: float) -> bool:
        node_id = self.nodes[index].node_id
        proc = self._procs.get(node_id)
        if proc is not None and proc.pid == pid:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            self._procs.pop(node_id, None)
            self._pids.pop(node_id, None)
            return True
        stopped = wait_pid_exit(pid, timeout)
        if stopped:
            self._pids.pop(node_id, None)
        return stopped


def _read_pid_file(node: KafkaNode) -> int | None:
    try:
        return int((node.directory / "kafka.pid").read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def _tail(*paths: Path, lines: int = 3) -> str:
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            continue
        interesting = [line for line in text if "ERROR" in line or "Exception" in line]
        chosen = (interesting or text)[-lines:]
        if chosen:
            return " | ".join(chosen)
    return "(no log output)"
