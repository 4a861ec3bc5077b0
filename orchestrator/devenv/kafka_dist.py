"""The Apache Kafka broker classpath, assembled from Maven Central by ``infra/kafka/pom.xml``.

The jars are copied once into ``~/.cache/sagaline/kafka-<version>/classpath-<pom hash>/``
(outside the repository); a changed pom gets a fresh directory, an unchanged one is reused.
Concurrent callers (parallel test sessions) serialise on a lock file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from sagaline.orchestrator.devenv.errors import DevEnvError, MissingToolError
from sagaline.orchestrator.devenv.progress import report, run_streaming

__all__ = [
    "KafkaDistribution",
    "cache_root",
    "default_pom_path",
    "ensure_kafka_distribution",
    "java_executable",
    "kafka_version",
]

_COMPLETE_MARKER = ".complete"


def default_pom_path() -> Path:
    """``infra/kafka/pom.xml`` of this checkout (override with ``SAGALINE_KAFKA_POM``)."""
    explicit = os.environ.get("SAGALINE_KAFKA_POM")
    if explicit:
        return Path(explicit)
    return Path(__file__).resolve().parents[2] / "infra" / "kafka" / "pom.xml"


def cache_root() -> Path:
    """``$SAGALINE_CACHE_DIR``, else ``$XDG_CACHE_HOME/sagaline``, else ``~/.cache/sagaline``."""
    explicit = os.environ.get("SAGALINE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "sagaline"


def kafka_version(pom: Path | None = None) -> str:
    """The pinned Kafka version (the ``kafka.version`` property of the pom)."""
    text = _read_pom(pom or default_pom_path())
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", text)
    if not match:
        raise DevEnvError(f"{pom or default_pom_path()} declares no <kafka.version>")
    return match.group(1)


def java_executable() -> str:
    """Path of ``java`` (``$JAVA_HOME/bin/java`` first)."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise MissingToolError(
            "java is not installed (Kafka needs Java 17+); "
            "e.g. apt-get install openjdk-17-jre-headless"
        )
    return found


@dataclass(frozen=True)
class KafkaDistribution:
    """A ready-to-run Kafka classpath."""

    version: str
    libs_dir: Path

    @property
    def classpath(self) -> str:
        return f"{self.libs_dir}/*"


def ensure_kafka_distribution(
    pom: Path | None = None, *, root: Path | None = None
) -> KafkaDistribution:
    """Return the cached classpath, running Maven first if it is absent."""
    pom_path = pom or default_pom_path()
    text = _read_pom(pom_path)
    version = kafka_version(pom_path)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
    version_dir = (root or cache_root()) / f"kafka-{version}"
    libs_dir = version_dir / f"classpath-{digest}"
    if (libs_dir / _COMPLETE_MARKER).is_file():
        return KafkaDistribution(version, libs_dir)
    version_dir.mkdir(parents=True, exist_ok=True)
    with open(version_dir / ".fetch.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (libs_dir / _COMPLETE_MARKER).is_file():
            _fetch(pom_path, libs_dir)
    return KafkaDistribution(version, libs_dir)


def _read_pom(pom: Path) -> str:
    try:
        return pom.read_text(encoding="utf-8")
    except OSError as exc:
        raise DevEnvError(f"cannot read the Kafka Maven project {pom}: {exc.strerror}") from exc


def _fetch(pom: Path, libs_dir: Path) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise MissingToolError(
            "Maven (mvn) is not installed; it fetches Kafka from Maven Central "
            "(e.g. apt-get install maven)"
        )
    java_executable()
    staging = libs_dir.with_name(libs_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(libs_dir, ignore_errors=True)
    command = [
        mvn,
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    report("maven", f"resolving Kafka {kafka_version(pom)} from Maven Central into ~/.m2")
    code, tail = run_streaming(command, _MavenCounter())
    if code != 0:
        raise DevEnvError("Maven could not fetch Kafka: " + " | ".join(tail[-5:]))
    if not any(staging.glob("kafka_*.jar")):
        raise DevEnvError(f"Maven finished but {staging} holds no Kafka jar")
    (staging / _COMPLETE_MARKER).write_text(pom.read_text(encoding="utf-8"), encoding="utf-8")
    staging.rename(libs_dir)
    jars = sum(1 for _ in libs_dir.glob("*.jar"))
    report("maven", f"{jars} jars copied to {libs_dir}", done=True)


_SIZE = re.compile(r"\((\d+(?:\.\d+)?) (B|kB|KB|MB|GB)")
_UNITS = {"B": 1, "kB": 1_000, "KB": 1_000, "MB": 1_000_000, "GB": 1_000_000_000}


class _MavenCounter:
    """Counts Maven's "Downloaded from" lines into a progress report."""

    def __init__(self) -> None:
        self.files = 0
        self.size = 0.0

    def __call__(self, line: str) -> None:
        if not line.startswith("Downloaded from"):
            return
        self.files += 1
        match = _SIZE.search(line)
        if match:
            self.size += float(match.group(1)) * _UNITS[match.group(2)]
        report(
            "maven",
            f"downloaded {self.files} files ({self.size / 1_000_000:.1f} MB) into ~/.m2/repository",
        )
