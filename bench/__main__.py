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
    "sl651": "bench.sl651",
    "console": "bench.console",
    "city": "bench.megacity",
    "failover": "bench.failover",
}


def main() -> int:
    """Run the named benchmark and print its figures as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument(
        "--size",
        default="1.0",
        help="fraction of the full size (1.0: a Yangjiang-sized city; for city, Shenzhen), "
        "or a city's name where the benchmark knows it (city: shenzhen, yangjiang)",
    )
    parser.add_argument("--quick", action="store_true", help="same as --size 0.1, a smoke run")
    parser.add_argument(
        "--field", action="store_true", help="poll only: over emulated 9600-baud lines and 4G DTUs"
    )
    args = parser.parse_args()
    if args.field and args.name != "poll":
        parser.error("--field applies to the poll benchmark only")
    module = importlib.import_module(BENCHMARKS[args.name])
    named: dict[str, float] = getattr(module, "SIZES", {})
    try:
        size = named[args.size] if args.size in named else float(args.size)
    except ValueError:
        choices = ", ".join(sorted(named)) or "none for this benchmark"
        parser.error(f"--size must be a number or a city's name ({choices}): {args.size!r}")
    if size <= 0:
        parser.error("--size must be positive")
    size = 0.1 if args.quick else size
    figures = module.run(size=size, field=True) if args.field else module.run(size=size)
    print(json.dumps(figures, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
