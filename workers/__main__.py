"""``python -m workers <name> [--partition k/N]``: run one worker, configured from the environment."""

from __future__ import annotations

import argparse
import sys

from workers.registry import WORKERS, run_worker
from workers.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("name", choices=sorted(WORKERS))
    parser.add_argument("--partition", default="0/1", help="k/N: take partitions p with p %% N == k")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings.configure_logging()
    return run_worker(args.name, args.partition, config=settings)


if __name__ == "__main__":
    sys.exit(main())
