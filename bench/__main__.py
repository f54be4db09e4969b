"""Run a benchmark: ``python -m bench NAME``; prints one JSON line of figures."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

BENCHMARKS = {
    "poll": "bench.poll",
    "ingest": "bench.ingest",
    "rules": "bench.rules",
    "control": "bench.control",
}


def main() -> int:
    """Run the named benchmark and print its figures as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args()
    module = importlib.import_module(BENCHMARKS[args.name])
    figures = module.run(quick=args.quick)
    print(json.dumps(figures, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
