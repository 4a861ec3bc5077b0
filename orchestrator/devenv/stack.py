"""The development stack behind ``sagaline dev up | down | status``.

State lives next to the settings file (``sagaline.orchestrator.config.dev_env_path()``,
by default ``.sagaline/``)::

    .sagaline/dev.env          KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL and SAGALINE_KAFKA_* (read
                               by Settings and every Kafka client; 0600; names files, no password)
    .sagaline/dev-state.json   where the Kafka and PostgreSQL directories are, secured or not
    .sagaline/secrets/         0700: CA, broker certificate, SCRAM passwords, pgpass (0600 each;
                               see StackCredentials and docs/security.md)
    .sagaline/keys/            0700: the Ed25519 keys that sign records, one per role principal
                               (NAME.key 0600, NAME.KEYID.pub; see docs/security.md)
    .sagaline/kafka/           the Kafka cluster (see LocalKafka)
    .sagaline/postgres/        the PostgreSQL cluster, unless the server's OS user cannot
                               reach it; then /var/tmp/sagaline-pg-<hash>/ (see LocalPostgres)

Ports, cluster ids and data survive ``down``; ``up`` restarts the same servers on
the same ports when those are still free. Running ``up`` twice is harmless.

By default both servers are secured (Kafka: SASL/SCRAM-SHA-512 over TLS, KRaft's
StandardAuthorizer, ``admin`` the only super user; PostgreSQL: scram-sha-256), both on
127.0.0.1 only; ``up(insecure=True)`` (``dev up --insecure``) starts them PLAINTEXT/trust.
A stack keeps the mode it was created with until ``down --purge``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sagaline.orchestrator.config import dev_env_path
from sagaline.orchestrator.devenv.credentials import StackCredentials, write_private
from sagaline.orchestrator.devenv.errors import DevEnvError
from sagaline.orchestrator.devenv.kafka import LocalKafka
from sagaline.orchestrator.devenv.kafka_dist import java_executable, kafka_version
from sagaline.orchestrator.devenv.ports import ensure_port_free, port_is_free
from sagaline.orchestrator.devenv.postgres import LocalPostgres, reachable_by
from sagaline.orchestrator.devenv.postgres_dist import ensure_postgres_binaries, run_as
from sagaline.orchestrator.devenv.processes import run_concurrently
from sagaline.orchestrator.runtime.signing import ensure_role_keys

__all__ = ["ComponentStatus", "DevStack", "StackStatus"]

_STATE_FILE = "dev-state.json"


@dataclass(frozen=True)
class ComponentStatus:
    """One server of the stack."""

    name: str
    running: bool
    address: str
    pids: tuple[int, ...]
    data_dir: str
    log_file: str
    version: str
    #: "SASL_SSL/SCRAM-SHA-512", "scram-sha-256", or "PLAINTEXT" / "trust" (insecure)
    security: str = ""


@dataclass(frozen=True)
class StackStatus:
    """What ``dev status`` reports."""

    kafka: ComponentStatus | None
    postgres: ComponentStatus | None
    env_file: str

    @property
    def all_running(self) -> bool:
        return bool(self.kafka and self.kafka.running and self.postgres and self.postgres.running)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kafka": asdict(self.kafka) if self.kafka else None,
            "postgres": asdict(self.postgres) if self.postgres else None,
            "env_file": self.env_file,
            "all_running": self.all_running,
        }


class DevStack:
    """Local Kafka + PostgreSQL for one working directory."""

    def __init__(self, env_file: Path | None = None) -> None:
        self.env_file = (env_file or dev_env_path()).resolve()
        self.state_dir = self.env_file.parent
        self.state_file = self.state_dir / _STATE_FILE

    # -- state -----------------------------------------------------------------

    def _read_state(self) -> dict[str, Any]:
        if not self.state_file.is_file():
            return {}
        try:
            loaded: dict[str, Any] = json.loads(self.state_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DevEnvError(f"{self.state_file} is not valid JSON; delete it") from exc
        return loaded

    @property
    def secrets_dir(self) -> Path:
        return self.state_dir / "secrets"

    def _credentials(self, state: dict[str, Any]) -> StackCredentials | None:
        """The stack's credentials when it is (or was created) secured, else None."""
        if not state.get("secured", False):
            return None
        return StackCredentials.ensure(self.secrets_dir)

    def _write_state(self, kafka: LocalKafka, postgres: LocalPostgres) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "kafka_dir": str(kafka.base_dir),
            "kafka_brokers": len(kafka.nodes),
            "postgres_dir": str(postgres.base_dir),
            "secured": kafka.credentials is not None,
        }
        self.state_file.write_text(json.dumps(state, indent=2), encoding="utf-8")

    def _postgres_dir(self, state: dict[str, Any]) -> Path:
        if "postgres_dir" in state:
            return Path(state["postgres_dir"])
        preferred = self.state_dir / "postgres"
        owner = run_as()
        if reachable_by(preferred, owner.uid, owner.gid):
            return preferred
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:10]
        # /var/tmp outlives reboots and every account can traverse it.
        return Path("/var/tmp") / f"sagaline-pg-{digest}"  # noqa: S108

    def _kafka(
        self,
        state: dict[str, Any],
        port: int | None,
        brokers: int,
        creds: StackCredentials | None = None,
    ) -> LocalKafka:
        base = Path(state.get("kafka_dir", self.state_dir / "kafka"))
        kafka = LocalKafka(base, brokers=brokers, credentials=creds)
        if port is not None:
            if kafka.is_running() and kafka.nodes[0].broker_port != port:
                raise DevEnvError(
                    f"Kafka already runs on {kafka.bootstrap_servers}; "
                    "run `sagaline dev down` first"
                )
            if kafka.nodes[0].broker_port != port:
                ports = [port] if brokers == 1 else None
                kafka = LocalKafka(base, brokers=brokers, broker_ports=ports, credentials=creds)
        elif not kafka.is_running() and not all(
            port_is_free(n.broker_port) and port_is_free(n.controller_port) for n in kafka.nodes
        ):
            kafka = LocalKafka(base, brokers=brokers, broker_ports=[0] * brokers, credentials=creds)
        return kafka

    def _postgres(
        self, state: dict[str, Any], port: int | None, creds: StackCredentials | None = None
    ) -> LocalPostgres:
        base = self._postgres_dir(state)
        postgres = LocalPostgres(base, credentials=creds)
        if port is not None and postgres.port != port:
            if postgres.is_running():
                raise DevEnvError(
                    f"PostgreSQL already runs on port {postgres.port}; "
                    "run `sagaline dev down` first"
                )
            return LocalPostgres(base, port=port, credentials=creds)
        if port is None and not postgres.is_running() and not port_is_free(postgres.port):
            return LocalPostgres(base, port=0, credentials=creds)
        return postgres

    # -- commands --------------------------------------------------------------

    def up(
        self,
        *,
        kafka_port: int | None = None,
        postgres_port: int | None = None,
        brokers: int | None = None,
        insecure: bool = False,
    ) -> StackStatus:
        """Start whatever is not running, write the settings file, return the status.

        Secured unless ``insecure``; a stack created in the other mode is refused
        (``down --purge`` first)."""
        state = self._read_state()
        if state and bool(state.get("secured", False)) == insecure:
            before = "secured" if state.get("secured") else "insecure (--insecure)"
            raise DevEnvError(
                f"the dev environment was created {before}; "
                "run `sagaline dev down --purge` to change that (its data is lost)"
            )
        creds = None if insecure else StackCredentials.ensure(self.secrets_dir)
        java_executable()
        ensure_postgres_binaries()  # installs it when absent, creating its OS user
        count = brokers or int(state.get("kafka_brokers", 1))
        if brokers and state.get("kafka_brokers", brokers) != brokers:
            raise DevEnvError(
                f"the dev Kafka has {state['kafka_brokers']} broker(s); "
                "run `sagaline dev down --purge` to change that"
            )
        kafka = self._kafka(state, kafka_port, count, creds)
        postgres = self._postgres(state, postgres_port, creds)
        if not kafka.is_running():
            for node in kafka.nodes:
                ensure_port_free(node.broker_port)
                ensure_port_free(node.controller_port)
        if not postgres.is_running():
            ensure_port_free(postgres.port)
        try:
            run_concurrently([kafka.start, postgres.start])
        finally:
            # Recorded even after a failure, so that `down` stops whichever did start.
            self._write_state(kafka, postgres)
        keys = ensure_role_keys(self.env_file.parent / "keys") if creds else None
        write_private(self.env_file, _env_text(kafka, postgres, creds, keys))
        return self._status(kafka, postgres)

    def down(self, *, purge: bool = False) -> StackStatus:
        """Stop both servers (data is kept unless ``purge``) and remove the settings file."""
        state = self._read_state()
        kafka = postgres = None
        if state:
            creds = self._credentials(state)
            kafka = LocalKafka(
                Path(state["kafka_dir"]),
                brokers=int(state.get("kafka_brokers", 1)),
                credentials=creds,
            )
            postgres = LocalPostgres(Path(state["postgres_dir"]), credentials=creds)
            kafka.stop()
            postgres.stop()
        self.env_file.unlink(missing_ok=True)
        status = self._status(kafka, postgres)
        if purge and kafka and postgres:
            shutil.rmtree(kafka.base_dir, ignore_errors=True)
            shutil.rmtree(postgres.base_dir, ignore_errors=True)
            self.state_file.unlink(missing_ok=True)
            shutil.rmtree(self.secrets_dir, ignore_errors=True)
        return status

    def status(self) -> StackStatus:
        state = self._read_state()
        if not state:
            return self._status(None, None)
        creds = self._credentials(state)
        kafka = LocalKafka(
            Path(state["kafka_dir"]), brokers=int(state.get("kafka_brokers", 1)), credentials=creds
        )
        postgres = LocalPostgres(Path(state["postgres_dir"]), credentials=creds)
        return self._status(kafka, postgres)

    def _status(self, kafka: LocalKafka | None, postgres: LocalPostgres | None) -> StackStatus:
        kafka_status = postgres_status = None
        if kafka is not None:
            pids = tuple(p for p in (kafka.pid(i) for i in range(len(kafka.nodes))) if p)
            kafka_status = ComponentStatus(
                name="kafka",
                running=len(pids) == len(kafka.nodes),
                address=kafka.bootstrap_servers,
                pids=pids,
                data_dir=str(kafka.base_dir),
                log_file=str(kafka.nodes[0].log_file),
                version=_kafka_version_or_unknown(),
                security="SASL_SSL/SCRAM-SHA-512" if kafka.credentials else "PLAINTEXT",
            )
        if postgres is not None:
            pid = postgres.pid()
            postgres_status = ComponentStatus(
                name="postgres",
                running=pid is not None,
                address=postgres.url,
                pids=(pid,) if pid else (),
                data_dir=str(postgres.base_dir),
                log_file=str(postgres.log_file),
                version=str(postgres.version) if pid else "",
                security="scram-sha-256" if postgres.credentials else "trust",
            )
        return StackStatus(kafka_status, postgres_status, str(self.env_file))


def _env_text(
    kafka: LocalKafka,
    postgres: LocalPostgres,
    creds: StackCredentials | None,
    keys: Path | None = None,
) -> str:
    """dev.env: addresses and the names of the credential files, never a password."""
    lines = [
        "# Written by `sagaline dev up`; removed by `sagaline dev down`.",
        f"KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers}",
        f"DATABASE_URL={postgres.url}",
    ]
    if creds is None:
        lines.append("SAGALINE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT")
    else:
        lines += [
            "SAGALINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL",
            f"SAGALINE_KAFKA_CA={creds.ca_file}",
            f"SAGALINE_KAFKA_CREDENTIALS={creds.kafka_users_file}",
            "# the principal of every command unless SAGALINE_KAFKA_USER says otherwise",
            "SAGALINE_KAFKA_USER=admin",
        ]
    if keys is not None:
        # Ed25519 signatures of every record (docs/security.md), on with the transport
        lines += [f"SAGALINE_KEYS_DIR={keys}", "SAGALINE_SIGNING=true"]
    else:
        lines.append("SAGALINE_SIGNING=false")
    return "\n".join(lines) + "\n"


def _kafka_version_or_unknown() -> str:
    try:
        return kafka_version()
    except DevEnvError:
        return "unknown"
