"""``python -m workers <name> [--partition k/N]``: run one worker, configured from the environment."""

from __future__ import annotations

import argparse
import sys

from events.logs import configure_logging
from workers.registry import WORKERS, run_worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("name", choices=sorted(WORKERS))
    parser.add_argument("--partition", default="0/1", help="k/N: take partitions p with p %% N == k")
    args = parser.parse_args(argv)
    configure_logging()
    return run_worker(args.name, args.partition)


if __name__ == "__main__":
    sys.exit(main())
