"""Run every benchmark module in this package (or the ones named on the command line)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import benchmarks.perf as perf


def main(names: list[str]) -> int:
    available = sorted(m.name for m in pkgutil.iter_modules(perf.__path__) if not m.name.startswith("_"))
    unknown = sorted(set(names) - set(available))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available}", file=sys.stderr)
        return 2
    for name in names or available:
        print(f"\n=== benchmarks.perf.{name} ===", flush=True)
        start = time.perf_counter()
        importlib.import_module(f"benchmarks.perf.{name}").main()
        print(f"(benchmarks.perf.{name}: {time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
