"""``python -m sagaline.orchestrator.bench``: print the orchestrator benchmark as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from sagaline.orchestrator.bench.run import BenchOptions, run_bench
from sagaline.orchestrator.config import Settings


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark against the configured Kafka and print JSON."""
    parser = argparse.ArgumentParser(prog="python -m sagaline.orchestrator.bench")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default: env)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--sequential", type=int, default=100, help="sagas run one at a time")
    parser.add_argument("--throughput", type=int, default=1000, help="sagas sent at once")
    parser.add_argument(
        "--recovery", type=int, default=1000, help="sagas in the kill test (0: skip)"
    )
    parser.add_argument("--sleep-ms", type=float, default=5.0, help="simulated step time")
    parser.add_argument("--max-batch", type=int, default=500)
    parser.add_argument("--fetch-wait-max-ms", type=int, default=5)
    parser.add_argument("--keep-topics", action="store_true")
    args = parser.parse_args(argv)
    settings = Settings.from_env(kafka_bootstrap_servers=args.bootstrap)
    options = BenchOptions(
        bootstrap=settings.kafka_bootstrap_servers,
        partitions=args.partitions,
        sequential=args.sequential,
        throughput=args.throughput,
        recovery=args.recovery,
        sleep_ms=args.sleep_ms,
        max_batch=args.max_batch,
        fetch_wait_max_ms=args.fetch_wait_max_ms,
        keep_topics=args.keep_topics,
    )
    json.dump(run_bench(options), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
