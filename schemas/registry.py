"""Where writer schemas come from: the local catalogue and, optionally, a
Confluent Schema Registry.

:class:`Catalogue` knows every schema this code base can read: the current
schema of each record in :data:`sagaline.schemas.catalog.ALL_RECORDS` (generated from
the models, identical to the committed ``schemas/avro/*.avsc``) and every
released version kept under ``schemas/released/<version>/*.avsc``.  It is
indexed by the CRC-64-AVRO fingerprint of the schema's parsing canonical
form (the id in Avro single-object encoding) and by full record name.

:class:`ConfluentSchemaRegistry` is a small client of the Confluent Schema
Registry REST API (standard library ``urllib`` only): register and look up a
schema under a subject, fetch a schema by id; ids and schemas are cached for
the life of the client.  Subjects follow the record-name strategy by default
(``dev.sagaline.StepSucceeded``), since each sagaline topic carries several
record types.
"""

from __future__ import annotations

import functools
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastavro.schema import fingerprint, to_parsing_canonical_form

from sagaline.schemas.avrogen import avro_schema, check_bounded, full_name
from sagaline.schemas.base import Record
from sagaline.schemas.errors import (
    RegistryError,
    RegistryUnavailable,
    SchemaError,
    SchemaGenerationError,
    UnknownSchema,
)

__all__ = [
    "RELEASED_DIR",
    "Catalogue",
    "ConfluentSchemaRegistry",
    "RegistryUnavailable",
    "SchemaVersion",
    "SubjectStrategy",
    "error_from_response",
    "load_released",
    "record_name_subject",
    "schema_fingerprint",
    "topic_name_subject",
    "topic_record_name_subject",
]

RELEASED_DIR = Path(__file__).resolve().parent / "released"

SubjectStrategy = Callable[[str], str]
"""Maps a record's full Avro name to the registry subject it is registered under."""


def schema_fingerprint(schema: Any) -> bytes:
    """The 8-byte little-endian CRC-64-AVRO fingerprint of a schema's canonical form."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


@dataclass(frozen=True)
class SchemaVersion:
    """One version of one record's schema."""

    full_name: str
    schema: Mapping[str, Any] = field(repr=False, compare=False)
    fingerprint: bytes
    #: ``None`` for the current schema (from the models), else the release, e.g. ``"v1"``.
    release: str | None = None

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()

    @classmethod
    def of(cls, schema: Mapping[str, Any], release: str | None = None) -> SchemaVersion:
        """Build a version from a record schema (validated as a bounded record schema)."""
        if not isinstance(schema, Mapping) or schema.get("type") != "record":
            raise SchemaError("a top-level sagaline schema must be an Avro record")
        try:
            check_bounded(schema)
            fp = schema_fingerprint(dict(schema))
        except SchemaGenerationError:
            raise
        except Exception as exc:
            raise SchemaError(f"not a valid Avro schema: {exc}") from exc
        return cls(str(schema["name"]), schema, fp, release)


def load_released(directory: Path = RELEASED_DIR) -> list[SchemaVersion]:
    """Every ``<release>/<Name>.avsc`` below ``directory`` (releases in name order)."""
    versions: list[SchemaVersion] = []
    if not directory.is_dir():
        return versions
    for release_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        for path in sorted(release_dir.glob("*.avsc")):
            schema = json.loads(path.read_text(encoding="utf-8"))
            versions.append(SchemaVersion.of(schema, release=release_dir.name))
    return versions


class Catalogue:
    """Every readable schema, by fingerprint and by full record name."""

    def __init__(
        self, records: Iterable[type[Record]], released: Iterable[SchemaVersion] = ()
    ) -> None:
        self._models: dict[str, type[Record]] = {}
        self._current: dict[str, SchemaVersion] = {}
        self._versions: dict[str, list[SchemaVersion]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        self._classes: set[type[Record]] = set()
        for model in records:
            name = full_name(model)
            if name in self._models and self._models[name] is not model:
                raise SchemaError(f"two record classes are named {name}")
            version = SchemaVersion.of(avro_schema(model))
            self._models[name] = model
            self._classes.add(model)
            self._current[name] = version
            self._by_fingerprint[version.fingerprint] = version
        for version in released:
            self._versions.setdefault(version.full_name, []).append(version)
            # the current schema wins a fingerprint shared with a release
            self._by_fingerprint.setdefault(version.fingerprint, version)
        for name, current in self._current.items():
            self._versions.setdefault(name, []).append(current)

    @classmethod
    def default(cls) -> Catalogue:
        """The catalogue of :data:`~.catalog.ALL_RECORDS` and ``schemas/released``."""
        return _default_catalogue()

    @property
    def models(self) -> Mapping[str, type[Record]]:
        """Full Avro name → record class, for every current record."""
        return self._models

    def model(self, name: str) -> type[Record]:
        try:
            return self._models[name]
        except KeyError:
            raise UnknownSchema(f"no current record type is named {name}") from None

    def current(self, name: str) -> SchemaVersion:
        """The current schema of a record (by full Avro name)."""
        try:
            return self._current[name]
        except KeyError:
            raise UnknownSchema(f"no current record type is named {name}") from None

    def versions(self, name: str) -> list[SchemaVersion]:
        """Released versions (oldest first), then the current one."""
        return list(self._versions.get(name, ()))

    def released(self) -> list[SchemaVersion]:
        """Every released version of every record."""
        return [v for vs in self._versions.values() for v in vs if v.release is not None]

    def by_fingerprint(self, fp: bytes) -> SchemaVersion:
        """The schema with this fingerprint; :class:`UnknownSchema` if there is none."""
        try:
            return self._by_fingerprint[fp]
        except KeyError:
            raise UnknownSchema(
                f"unknown schema fingerprint {fp.hex()} (not a current or released sagaline "
                "schema: written by newer code, or not a sagaline message)"
            ) from None

    def __contains__(self, model: object) -> bool:
        return model in self._classes


@functools.cache
def _default_catalogue() -> Catalogue:
    from sagaline.schemas.catalog import ALL_RECORDS

    return Catalogue(ALL_RECORDS, load_released())


def record_name_subject(full_record_name: str) -> str:
    """Confluent ``RecordNameStrategy``: the subject is the record's full name."""
    return full_record_name


def topic_name_subject(topic: str) -> SubjectStrategy:
    """Confluent ``TopicNameStrategy``: ``<topic>-value`` for every record.

    Only for a topic that carries a single record type (the state, journal and
    dead-letter topics); the registry checks every version under one subject.
    """

    def subject(full_record_name: str) -> str:
        return f"{topic}-value"

    return subject


def topic_record_name_subject(topic: str) -> SubjectStrategy:
    """Confluent ``TopicRecordNameStrategy``: ``<topic>-<full record name>``."""

    def subject(full_record_name: str) -> str:
        return f"{topic}-{full_record_name}"

    return subject


class ConfluentSchemaRegistry:
    """A cached client of the Confluent Schema Registry REST API (stdlib HTTP).

    ``url`` is the registry's base URL; ``auth`` is HTTP basic auth
    (user, password).  All methods are thread-safe; schemas by id and ids by
    (subject, schema) are cached, so steady-state encoding and decoding make
    no HTTP calls.
    """

    CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        auth: tuple[str, str] | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise RegistryError(f"schema registry URL must be http(s)://host[:port]: {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._auth = auth
        self._lock = threading.Lock()
        self._schemas_by_id: dict[int, dict[str, Any]] = {}
        self._ids: dict[tuple[str, str], int] = {}

    # -- cache ---------------------------------------------------------------

    def cached_id(self, subject: str, schema: Mapping[str, Any]) -> int | None:
        """The id of ``schema`` under ``subject`` if this client has seen it."""
        with self._lock:
            return self._ids.get((subject, _canonical(schema)))

    def cached_schema(self, schema_id: int) -> dict[str, Any] | None:
        """The schema with ``schema_id`` if this client has fetched it."""
        with self._lock:
            return self._schemas_by_id.get(schema_id)

    def preload(
        self, schema_id: int, schema: Mapping[str, Any], subject: str | None = None
    ) -> None:
        """Seed the cache with a known id (from deployment configuration): no HTTP call."""
        self._remember(subject, schema, schema_id)

    def _remember(self, subject: str | None, schema: Mapping[str, Any], schema_id: int) -> None:
        with self._lock:
            if subject is not None:
                self._ids[(subject, _canonical(schema))] = schema_id
            self._schemas_by_id.setdefault(schema_id, dict(schema))

    # -- API -----------------------------------------------------------------

    def register(self, subject: str, schema: Mapping[str, Any]) -> int:
        """Register ``schema`` under ``subject`` (idempotent); returns its global id."""
        cached = self.cached_id(subject, schema)
        if cached is not None:
            return cached
        body = {"schema": json.dumps(schema, separators=(",", ":")), "schemaType": "AVRO"}
        reply = self._call("POST", f"/subjects/{_quote(subject)}/versions", body)
        schema_id = _int_field(reply, "id")
        self._remember(subject, schema, schema_id)
        return schema_id

    def lookup(self, subject: str, schema: Mapping[str, Any]) -> int:
        """The id of ``schema`` already registered under ``subject``."""
        cached = self.cached_id(subject, schema)
        if cached is not None:
            return cached
        body = {"schema": json.dumps(schema, separators=(",", ":")), "schemaType": "AVRO"}
        reply = self._call("POST", f"/subjects/{_quote(subject)}", body)
        schema_id = _int_field(reply, "id")
        self._remember(subject, schema, schema_id)
        return schema_id

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        """The schema registered with ``schema_id`` (:class:`UnknownSchema` if none)."""
        cached = self.cached_schema(schema_id)
        if cached is not None:
            return cached
        reply = self._call("GET", f"/schemas/ids/{int(schema_id)}", None)
        text = reply.get("schema")
        if not isinstance(text, str):
            raise RegistryError(f"registry reply for schema id {schema_id} has no schema")
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RegistryError(f"registry schema id {schema_id} is not JSON: {exc}") from exc
        if not isinstance(schema, dict):
            raise UnknownSchema(f"registry schema id {schema_id} is not an Avro record schema")
        self._remember(None, schema, schema_id)
        return schema

    def set_compatibility(self, subject: str, level: str = "BACKWARD_TRANSITIVE") -> None:
        """Set a subject's compatibility level (sagaline keeps every version readable)."""
        self._call("PUT", f"/config/{_quote(subject)}", {"compatibility": level})

    # -- HTTP ----------------------------------------------------------------

    def build_request(
        self, method: str, path: str, body: Mapping[str, Any] | None
    ) -> urllib.request.Request:
        """The HTTP request for one API call (exposed for inspection and tests)."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Accept": self.CONTENT_TYPE}
        if data is not None:
            headers["Content-Type"] = self.CONTENT_TYPE
        if self._auth is not None:
            token = b64encode(f"{self._auth[0]}:{self._auth[1]}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        return urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.url + path, data=data, headers=headers, method=method
        )

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None) -> dict[str, Any]:
        request = self.build_request(method, path, body)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise error_from_response(exc.code, exc.read(), f"{method} {path}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise RegistryUnavailable(f"schema registry {self.url} unreachable: {exc}") from exc
        try:
            reply = json.loads(payload) if payload else {}
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{method} {path}: registry reply is not JSON") from exc
        if not isinstance(reply, dict):
            raise RegistryError(f"{method} {path}: unexpected registry reply {reply!r}")
        return reply


def error_from_response(status: int, body: bytes, what: str) -> SchemaError:
    """Map a registry error response to the right error (pure; used by the client)."""
    message = body.decode("utf-8", "replace")[:500]
    code = None
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            message = str(parsed.get("message", message))
            code = parsed.get("error_code")
    except json.JSONDecodeError:
        pass
    # 40401 subject not found, 40402 version not found, 40403 schema not found
    if status == 404:
        return UnknownSchema(f"{what}: not found in the schema registry ({code}): {message}")
    if status == 409:
        return RegistryError(f"{what}: incompatible with the subject's versions: {message}")
    if status == 422:
        return RegistryError(f"{what}: schema rejected as invalid ({code}): {message}")
    if status >= 500 or status == 408 or status == 429:
        return RegistryUnavailable(f"{what}: registry error {status}: {message}")
    return RegistryError(f"{what}: registry answered {status}: {message}")


def _canonical(schema: Mapping[str, Any]) -> str:
    return str(to_parsing_canonical_form(dict(schema)))


def _quote(subject: str) -> str:
    return urllib.parse.quote(subject, safe="")


def _int_field(reply: Mapping[str, Any], key: str) -> int:
    value = reply.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RegistryError(f"registry reply has no integer {key!r}: {dict(reply)!r}")
    return value
