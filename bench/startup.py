"""Cold starts: wall time of a fresh process for ``import srcube``, ``srcube --help``, ``srcube --version`` and
``srcube models``, and what each one imports.

Each command runs ``--repeats`` times (default 5), one fresh interpreter each (the venv's python, and the
``srcube`` console script beside it), one after the other; the figures are the median, min and max wall time.
"Cold" is the process: nothing is imported yet. The OS page cache is warm after the first run (the files of
torch, xarray, ... stay in memory), so the first run of a command is usually the slowest and the median is
what a user sees on the second try. The machine's load (``/proc/loadavg``) is printed with the figures: on a
busy machine every wall time grows; the CPU time (user + system) of each process hardly does, and is close to the
wall time on an idle machine. Ends with one JSON line.
Usage: ``python bench/startup.py [--repeats 5] [--only 'srcube models']``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: the libraries the quick commands should not import (each a whole scientific stack)
HEAVY = ("torch", "xarray", "odc.stac", "prefect", "rasterio", "dask", "zarr")
#: what prints the heavy modules a command left in sys.modules (the command runs in-process, as its script does)
_PROBE = ("import sys\n{code}\n"
          "print('\\nHEAVY ' + ','.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)")


def commands(python: Path) -> dict[str, tuple[list[str], str]]:
    """label -> (the command line, the same work as Python code for the import probe)."""
    script = python.parent / "srcube"
    cli = "from srcube.cli import main\nsys.argv = ['srcube', {args}]\ntry:\n    main()\nexcept SystemExit:\n    pass"
    return {
        "import srcube": ([str(python), "-c", "import srcube"], "import srcube"),
        "srcube --help": ([str(script), "--help"], cli.format(args="'--help'")),
        "srcube --version": ([str(script), "--version"], cli.format(args="'--version'")),
        "srcube models": ([str(script), "models"], cli.format(args="'models'")),
    }


def run_once(argv: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one fresh process: the CPU time (user + system) hardly grows with the machine's load,
    so it says what the wall time is on an idle machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def heavy_imports(python: Path, code: str) -> list[str]:
    proc = subprocess.run([str(python), "-c", _PROBE.format(code=code, heavy=HEAVY)], capture_output=True, text=True,
                          timeout=600)
    line = [s for s in proc.stderr.splitlines() if s.startswith("HEAVY ")]
    if not line:
        raise SystemExit(f"the import probe failed: {proc.stderr[-2000:]}")
    return [m for m in line[-1][len("HEAVY "):].split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per command")
    parser.add_argument("--python", type=Path, default=Path(sys.executable),
                        help="the interpreter of the venv srcube is installed in (its bin/ holds the srcube script)")
    parser.add_argument("--only", action="append", metavar="LABEL",
                        help="only this command, e.g. 'srcube models' (repeatable; default: all)")
    args = parser.parse_args()
    env_load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    figures = {}
    for label, (argv, code) in commands(args.python).items():
        if args.only and label not in args.only:
            continue
        runs = [run_once(argv) for _ in range(args.repeats)]
        times = [w for w, _ in runs]
        figures[label] = {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
                          "max_s": round(max(times), 3), "first_s": round(times[0], 3),
                          "cpu_median_s": round(statistics.median(c for _, c in runs), 3),
                          "heavy_imported": heavy_imports(args.python, code)}
        f = figures[label]
        print(f"{label:18s} median {f['median_s']:6.2f} s  min {f['min_s']:6.2f} s  max {f['max_s']:6.2f} s  "
              f"(first {f['first_s']:.2f} s; CPU median {f['cpu_median_s']:.2f} s)  heavy imports: "
              f"{', '.join(f['heavy_imported']) or 'none'}")
    load_after = Path("/proc/loadavg").read_text().split()[:3] if env_load else []
    print(f"{args.repeats} fresh processes each, one after the other; page cache warm after the first run; "
          f"load average {' '.join(env_load)} before, {' '.join(load_after)} after, on {os.cpu_count()} cores")
    print(json.dumps({"bench": "startup", "repeats": args.repeats, "cores": os.cpu_count(),
                      "loadavg_before": [float(x) for x in env_load], "loadavg_after": [float(x) for x in load_after],
                      "commands": figures}))


if __name__ == "__main__":
    main()
