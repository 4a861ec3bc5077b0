"""Backward-transitive compatibility: the current schemas must read every release.

Every released version of every record is kept in
``schemas/released/<version>/<Name>.avsc`` with encoded sample messages in
``<Name>.samples.json``.  :func:`check` refuses a change when, for any record
and any released version:

* the record no longer exists (old messages could not be read);
* a field was added without a default (old data has no value for it);
* a field was removed that had no default (readers of the old version need it);
* a field's type changed other than by an Avro promotion
  (int→long→float→double, string↔bytes, a type into a union that holds it);
* an enum lost symbols and has no default, or an enum has no default at all
  (it could never grow);
* a released sample message no longer decodes with the current reader.

``sagaline schemas check-compat`` runs the check and exits 1 on any problem.
``sagaline schemas check-compat --release v2`` freezes the current schemas as a
new release (schemas and encoded samples), after checking them.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagaline.schemas.avrogen import record_name, schema_text
from sagaline.schemas.base import Record
from sagaline.schemas.codec import Codec
from sagaline.schemas.errors import IncompatibleSchema, SchemaError
from sagaline.schemas.registry import RELEASED_DIR, Catalogue, SchemaVersion, load_released
from sagaline.schemas.samples import sample_records

__all__ = [
    "Incompatibility",
    "check",
    "check_compat",
    "check_pair",
    "check_samples",
    "ensure_compatible",
    "release",
]

_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


@dataclass(frozen=True)
class Incompatibility:
    """One reason the current schemas cannot read a released version."""

    record: str
    release: str
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.record} (release {self.release}) at {self.path}: {self.problem}"


def check_pair(
    reader: Mapping[str, Any],
    writer: Mapping[str, Any],
    *,
    release: str = "?",
) -> list[Incompatibility]:
    """Why ``reader`` cannot read data written with ``writer`` (empty: it can)."""
    return _Checker(str(writer.get("name", "?")), release).check(reader, writer)


class _Checker:
    def __init__(self, record: str, release: str) -> None:
        self.record = record
        self.release = release
        self.reader_named: dict[str, Any] = {}
        self.writer_named: dict[str, Any] = {}
        self.problems: list[Incompatibility] = []
        self.seen: set[tuple[str, str]] = set()

    def check(self, reader: Any, writer: Any) -> list[Incompatibility]:
        _collect_named(reader, self.reader_named)
        _collect_named(writer, self.writer_named)
        self.visit(reader, writer, _short(self.record))
        return self.problems

    def fail(self, path: str, problem: str) -> None:
        self.problems.append(Incompatibility(self.record, self.release, path, problem))

    def resolve(self, schema: Any, named: dict[str, Any]) -> Any:
        """A named-type reference → its definition; ``{"type": X}`` wrappers → X."""
        if isinstance(schema, str):
            return named.get(schema, schema)
        if isinstance(schema, dict) and isinstance(schema.get("type"), (dict, list)):
            return self.resolve(schema["type"], named)
        if isinstance(schema, dict) and schema.get("type") in named:
            return named[schema["type"]]
        return schema

    def visit(self, reader: Any, writer: Any, path: str) -> None:
        r = self.resolve(reader, self.reader_named)
        w = self.resolve(writer, self.writer_named)
        if isinstance(w, list):
            for branch in w:
                self.visit_into(r, branch, path)
            return
        self.visit_into(r, w, path)

    def visit_into(self, reader: Any, writer: Any, path: str) -> None:
        r = self.resolve(reader, self.reader_named)
        w = self.resolve(writer, self.writer_named)
        if isinstance(r, list):
            wkind = _kind(w)
            candidates = [b for b in r if _matches(self.resolve(b, self.reader_named), w)]
            if not candidates:
                self.fail(path, f"the union has no branch that reads the old {wkind}")
                return
            self.visit_into(candidates[0], w, path)
            return
        rkind, wkind = _kind(r), _kind(w)
        if not _matches(r, w):
            self.fail(path, f"type changed from {_describe(w)} to {_describe(r)}")
            return
        if rkind == "record":
            self.record_fields(r, w, path)
        elif rkind == "enum":
            self.enum(r, w, path)
        elif rkind == "array":
            self.visit(r["items"], w["items"], f"{path}[]")
        elif rkind == "map":
            self.visit(r["values"], w["values"], f"{path}{{}}")
        elif rkind == "fixed" and r.get("size") != w.get("size"):
            self.fail(path, f"fixed size changed from {w.get('size')} to {r.get('size')}")
        elif _logical(r) != _logical(w) and rkind == wkind:
            self.fail(path, f"logical type changed from {_logical(w)} to {_logical(r)}")

    def record_fields(self, r: Mapping[str, Any], w: Mapping[str, Any], path: str) -> None:
        key = (str(r["name"]), str(w["name"]))
        if key in self.seen:
            return
        self.seen.add(key)
        wfields = {f["name"]: f for f in w.get("fields", [])}
        rfields = {f["name"]: f for f in r.get("fields", [])}
        for name, rfield in rfields.items():
            wfield = wfields.get(name) or _by_alias(rfield, wfields)
            if wfield is None:
                if "default" not in rfield:
                    self.fail(f"{path}.{name}", "new field without a default")
                continue
            self.visit(rfield["type"], wfield["type"], f"{path}.{name}")
        aliased = {a for f in rfields.values() for a in f.get("aliases", [])}
        for name, wfield in wfields.items():
            if name not in rfields and name not in aliased and "default" not in wfield:
                self.fail(f"{path}.{name}", "field removed, and it had no default")

    def enum(self, r: Mapping[str, Any], w: Mapping[str, Any], path: str) -> None:
        if "default" not in r:
            self.fail(path, f"enum {r['name']} has no default symbol, so it can never grow")
        lost = [s for s in w.get("symbols", []) if s not in r.get("symbols", [])]
        if lost and "default" not in r:
            self.fail(path, f"enum {r['name']} lost symbols {lost} and has no default")


def _collect_named(schema: Any, named: dict[str, Any]) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _collect_named(branch, named)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if kind in ("record", "enum", "fixed"):
        named.setdefault(str(schema["name"]), schema)
        for f in schema.get("fields", []):
            _collect_named(f.get("type"), named)
    elif kind == "array":
        _collect_named(schema.get("items"), named)
    elif kind == "map":
        _collect_named(schema.get("values"), named)
    else:
        _collect_named(kind, named)


def _kind(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    kind = schema.get("type")
    return kind if isinstance(kind, str) else _kind(kind)


def _logical(schema: Any) -> str | None:
    return schema.get("logicalType") if isinstance(schema, dict) else None


def _full(schema: Mapping[str, Any]) -> str:
    return str(schema.get("name", ""))


def _matches(reader: Any, writer: Any) -> bool:
    rkind, wkind = _kind(reader), _kind(writer)
    if wkind in _PROMOTIONS:
        return rkind in _PROMOTIONS[wkind]
    if wkind in _PRIMITIVES:
        return rkind == wkind
    if rkind != wkind:
        return False
    if rkind in ("record", "enum", "fixed"):
        return _full(reader) == _full(writer) or _full(writer) in reader.get("aliases", [])
    return True


def _by_alias(rfield: Mapping[str, Any], wfields: Mapping[str, Any]) -> Any:
    for alias in rfield.get("aliases", []):
        if alias in wfields:
            return wfields[alias]
    return None


def _describe(schema: Any) -> str:
    kind = _kind(schema)
    if kind in ("record", "enum", "fixed"):
        return f"{kind} {_full(schema)}"
    logical = _logical(schema)
    return f"{kind} ({logical})" if logical else kind


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


# -- the whole catalogue --------------------------------------------------------


def check(
    catalogue: Catalogue | None = None, released_dir: Path = RELEASED_DIR
) -> list[Incompatibility]:
    """Every incompatibility between the current schemas and the released versions."""
    catalogue = catalogue if catalogue is not None else Catalogue.default()
    released = load_released(released_dir)
    problems: list[Incompatibility] = []
    for version in released:
        release = version.release or "?"
        if version.full_name not in catalogue.models:
            problems.append(
                Incompatibility(
                    version.full_name,
                    release,
                    _short(version.full_name),
                    "record removed: messages of this release could no longer be read",
                )
            )
            continue
        current = catalogue.current(version.full_name)
        problems.extend(check_pair(current.schema, version.schema, release=release))
    problems.extend(_enum_defaults(catalogue))
    if not problems:
        problems.extend(
            check_samples(Codec(Catalogue(catalogue.models.values(), released)), released_dir)
        )
    return problems


def _enum_defaults(catalogue: Catalogue) -> list[Incompatibility]:
    problems: list[Incompatibility] = []
    for name in catalogue.models:
        schema = catalogue.current(name).schema
        problems.extend(p for p in check_pair(schema, schema, release="current"))
    return problems


def check_samples(codec: Codec, released_dir: Path = RELEASED_DIR) -> list[Incompatibility]:
    """Decode every released sample message with the current reader schemas."""
    problems: list[Incompatibility] = []
    for path in sorted(released_dir.glob("*/*.samples.json")):
        release = path.parent.name
        fixture = json.loads(path.read_text(encoding="utf-8"))
        record = str(fixture["record"])
        for i, text in enumerate(fixture["samples"]):
            try:
                decoded = codec.decode(base64.b64decode(text))
            except SchemaError as exc:
                problems.append(Incompatibility(record, release, f"sample {i}", str(exc)))
                continue
            if codec.decode(codec.encode(decoded)) != decoded:
                problems.append(
                    Incompatibility(record, release, f"sample {i}", "re-encoding changes it")
                )
    return problems


def ensure_compatible(
    catalogue: Catalogue | None = None, released_dir: Path = RELEASED_DIR
) -> None:
    """Raise :class:`IncompatibleSchema` listing every problem :func:`check` finds."""
    problems = check(catalogue, released_dir)
    if problems:
        raise IncompatibleSchema("\n".join(str(p) for p in problems))


def release(
    version: str,
    records: Iterable[type[Record]],
    released_dir: Path = RELEASED_DIR,
) -> list[Path]:
    """Freeze the current schemas of ``records`` as release ``version``."""
    target = released_dir / version
    if target.exists():
        raise IncompatibleSchema(f"release {version} already exists in {released_dir}")
    records = list(records)
    ensure_compatible(Catalogue(records, load_released(released_dir)), released_dir)
    codec = Codec(Catalogue(records))
    target.mkdir(parents=True)
    written: list[Path] = []
    for model in records:
        name = record_name(model)
        schema_path = target / f"{name}.avsc"
        schema_path.write_text(schema_text(model), encoding="utf-8")
        samples = sample_records(model)
        encoded = [codec.encode(s) for s in samples]
        for sample, data in zip(samples, encoded, strict=True):
            if codec.decode(data) != sample:
                raise IncompatibleSchema(f"{name}: a sample does not round-trip")
        fingerprint = SchemaVersion.of(json.loads(schema_text(model))).fingerprint_hex
        fixture = {
            "record": f"{json.loads(schema_text(model))['name']}",
            "fingerprint": fingerprint,
            "samples": [base64.b64encode(d).decode("ascii") for d in encoded],
        }
        sample_path = target / f"{name}.samples.json"
        sample_path.write_text(json.dumps(fixture, indent=2) + "\n", encoding="utf-8")
        written.extend([schema_path, sample_path])
    return written


def check_compat(release_name: str | None = None, released_dir: Path = RELEASED_DIR) -> int:
    """``sagaline schemas check-compat [--release VERSION] [--released-dir DIR]``: check
    the current schemas against every release (or freeze them as ``release_name``);
    returns the exit code."""
    from sagaline.schemas.catalog import ALL_RECORDS

    if release_name:
        try:
            paths = release(release_name, ALL_RECORDS, released_dir)
        except IncompatibleSchema as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 1
        print(f"released {release_name}: {len(paths)} files in {released_dir}")
        return 0
    catalogue = Catalogue(ALL_RECORDS, load_released(released_dir))
    problems = check(catalogue, released_dir)
    for problem in problems:
        print(f"INCOMPATIBLE {problem}", file=sys.stderr)
    if problems:
        return 1
    releases = sorted({v.release for v in catalogue.released() if v.release})
    print(
        f"compatible: {len(catalogue.models)} current records read every released version "
        f"({', '.join(releases) or 'none released yet'})"
    )
    return 0
