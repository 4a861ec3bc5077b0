"""sagaline installs under one import name and lives beside a project's own packages.

The wheel is built from this checkout and installed (not editable) into a
fresh virtual environment.  A throwaway project next to it has its own
``schemas`` and ``consumers`` packages (a Django Channels app has a
``consumers`` module by convention) and a saga whose data model comes from
its ``schemas``.  The project's own orchestrator, worker and relay, started
with the fresh environment's ``sagaline`` command, run a saga start to
finish on the session's real Kafka and PostgreSQL, and the saga's step
writes a row through the project's ``consumers`` helper.

The fresh environment takes the third-party dependencies (confluent-kafka,
psycopg, ...) from this test run's environment through a ``.pth`` line, so
that the test needs no download; sagaline itself comes only from the wheel.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

PROJECT_FILES = {
    "schemas/__init__.py": '"""The project\'s own schemas package."""\n',
    "schemas/orders.py": """
        from pydantic import BaseModel


        class Order(BaseModel):
            order_id: str
            cents: int
            receipt: int | None = None


        class Receipt(BaseModel):
            receipt: int
        """,
    "consumers/__init__.py": """
        \"\"\"The project's own consumers package (as in a Django Channels app).\"\"\"

        TABLE = "wheel_orders"


        def record(cursor, key: str, order_id: str, cents: int) -> int:
            row = cursor.execute(
                f"INSERT INTO {TABLE} (idempotency_key, order_id, cents) VALUES (%s, %s, %s)"
                " RETURNING receipt",
                (key, order_id, cents),
            ).fetchone()
            return int(row[0])
        """,
    "shop.py": """
        import consumers
        from schemas.orders import Order, Receipt

        from sagaline import Saga, SagaRegistry, StepContext, step


        class CheckoutSaga(Saga[Order]):
            type_name = "wheel_checkout"

            @step
            def charge(self, ctx: StepContext, data: Order) -> Receipt:
                return Receipt(
                    receipt=consumers.record(ctx.db, ctx.idempotency_key, data.order_id, data.cents)
                )

            @charge.on_result
            def _charged(self, data: Order, result: Receipt) -> Order:
                return data.model_copy(update={"receipt": result.receipt})


        REGISTRY = SagaRegistry([CheckoutSaga])
        """,
    "run_one.py": """
        import sys

        import consumers
        import schemas
        from schemas.orders import Order
        from shop import CheckoutSaga

        import sagaline

        from sagaline import SagaClient, Settings

        assert "site-packages" in sagaline.__file__, sagaline.__file__
        assert schemas.__file__.startswith(sys.path[0]), schemas.__file__
        assert consumers.TABLE == "wheel_orders"
        with SagaClient(Settings.from_env()) as client:
            order = Order(order_id="o-1", cents=1250)
            handle = client.start(CheckoutSaga, order, saga_id=sys.argv[1])
            state = handle.wait(timeout=90)
        print("status", state.status)
        """,
}


def _write_project(project: Path) -> None:
    for name, text in PROJECT_FILES.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def _build_wheel(out: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = out.glob("sagaline-*.whl")
    return wheel


_OFFLINE = ("--no-deps", "--no-index", "-q")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built once for the module's tests."""
    return _build_wheel(tmp_path_factory.mktemp("dist"))


def _fresh_venv(where: Path, wheel: Path) -> Path:
    # Without pip of its own (ensurepip costs ~4 s of CPU): this run's pip installs into it.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120
    )
    python = where / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Dependencies from this environment, without its editable sagaline (a plain path
    # line does not run the .pth hooks of the directory it adds).
    (Path(site) / "sagaline_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", *_OFFLINE, str(wheel)],
        check=True,
        timeout=300,
    )
    return where / "bin"


@contextlib.contextmanager
def _running(cmds: dict[str, list[str]], cwd: Path, env: dict[str, str]) -> Iterator[None]:
    procs = {
        name: subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=(cwd / f"{name}.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for name, cmd in cmds.items()
    }
    try:
        yield
    finally:
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def test_the_wheel_installs_only_the_sagaline_name(wheel: Path) -> None:
    tops = {name.split("/", 1)[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"sagaline"}
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "sagaline/schemas/avro/StartSaga.avsc" in names
    assert "sagaline/consumers/migrations/0001_worker_tables.sql" in names
    assert "sagaline/py.typed" in names


def test_a_saga_runs_from_a_project_with_its_own_schemas_and_consumers(
    tmp_path: Path, wheel: Path, kafka_bootstrap: str, fresh_database_url: str, topic_prefix: str
) -> None:
    bin_dir = _fresh_venv(tmp_path / "venv", wheel)
    project = tmp_path / "project"
    _write_project(project)
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE wheel_orders (receipt serial PRIMARY KEY,"
            " idempotency_key text UNIQUE NOT NULL, order_id text NOT NULL, cents int NOT NULL)"
        )
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(project),
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": fresh_database_url,
        "SAGALINE_TOPIC_PREFIX": f"{topic_prefix}-wheel",
        "SAGALINE_DEV_ENV": str(tmp_path / "no-dev.env"),
    }
    sagaline = str(bin_dir / "sagaline")
    subprocess.run(
        [sagaline, "topics", "ensure", "--partitions", "2"],
        cwd=project,
        env=env,
        check=True,
        timeout=120,
    )
    processes = {
        "orchestrator": [
            sagaline,
            "orchestrator",
            "run",
            "--app",
            "shop:REGISTRY",
            "--instance-id",
            "wheel-1",
        ],
        "worker": [sagaline, "worker", "run", "--app", "shop:REGISTRY"],
        "relay": [sagaline, "relay", "run"],
    }
    with _running(processes, project, env):
        result = subprocess.run(
            [str(bin_dir / "python"), "run_one.py", "wheel-order-1"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
        )
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in project.glob("*.log"))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{logs}"
    assert "status completed" in result.stdout
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        rows = conn.execute("SELECT idempotency_key, order_id, cents FROM wheel_orders").fetchall()
    assert rows == [("wheel-order-1/charge/1", "o-1", 1250)], rows
