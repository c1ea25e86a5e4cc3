"""asyncflow's benchmark suite.

    python bench/run.py                      # every scenario, default sizes, 5 repeats
    python bench/run.py -s a b -n 2000 -r 3  # some scenarios, another N
    python bench/run.py --json out.json      # also write the raw figures
    python bench/run.py --compare prefect    # scenarios a-f against Prefect too (if installed)

Each scenario runs in a fresh process, `--repeats` times, with asyncflow's default settings (state
tracking and INFO logging on, lines written to stderr, here /dev/null). The plain-Python baseline of
the same scenario runs in the same invocation, so every figure is also a ratio to that limit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scenarios import FUNCTIONS, SCENARIOS  # noqa: E402

COMPARABLE = ("a", "b", "c_async", "c_async_flow", "c_sync", "d", "e", "f")


def run_worker(scenario: str, lib: str, n: int) -> dict[str, float]:
    baseline_fn = FUNCTIONS[scenario][1]
    if lib == "baseline":
        return baseline_fn(n)
    import importlib

    module = importlib.import_module(lib)
    return FUNCTIONS[scenario][0](module, n)


def spawn(scenario: str, lib: str, n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "ASYNCFLOW_HOME": home, "PREFECT_HOME": home}
        out = subprocess.run(
            [sys.executable, str(HERE / "run.py"), "--worker", scenario, "--lib", lib, "-n", str(n)],
            check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True, timeout=900)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = samples[0].keys()
    return {k: {"median": statistics.median(s[k] for s in samples), "min": min(s[k] for s in samples),
                "max": max(s[k] for s in samples)} for k in keys}


def fmt(stats: dict[str, float]) -> str:
    return f"{stats['median']:10.1f}  ({stats['min']:.1f}–{stats['max']:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-s", "--scenario", nargs="*", choices=sorted(SCENARIOS),
                        help="scenarios to run (default: all)")
    parser.add_argument("-n", type=int, help="tasks per scenario (default: per scenario)")
    parser.add_argument("-r", "--repeats", type=int, default=5)
    parser.add_argument("--json", metavar="PATH", help="write the raw results as JSON")
    parser.add_argument("--compare", choices=["prefect"], help="also run scenarios a–f with this library")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--lib", default="asyncflow", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(run_worker(args.worker, args.lib, args.n)))
        return

    libs = ["asyncflow", "baseline"] + ([args.compare] if args.compare else [])
    results: dict[str, Any] = {"machine": {"python": platform.python_version(), "platform": platform.platform(),
                                           "cpus": os.cpu_count()}, "scenarios": {}}
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
          f"median (min–max) of {args.repeats} runs, each in a fresh process")
    for scenario in args.scenario or list(SCENARIOS):
        description, default_n = SCENARIOS[scenario]
        n = args.n or default_n
        entry: dict[str, Any] = {"description": description, "n": n}
        for lib in libs:
            if lib not in ("asyncflow", "baseline") and scenario not in COMPARABLE:
                continue
            repeats = 1 if scenario == "g" else args.repeats
            entry[lib] = summarise([spawn(scenario, lib, n) for _ in range(repeats)])
        results["scenarios"][scenario] = entry
        print(f"\n{scenario}. {description} (N={n})")
        for metric in entry["asyncflow"]:
            line = (f"   {metric:24s} asyncflow {fmt(entry['asyncflow'][metric])}   "
                    f"baseline {fmt(entry['baseline'][metric])}")
            base = entry["baseline"][metric]["median"]
            if metric.endswith(("_us", "_ms", "_s")) and base > 0:
                line += f"   ×{entry['asyncflow'][metric]['median'] / base:.1f}"
            for other in libs[2:]:
                if other in entry:
                    ratio = entry[other][metric]["median"] / entry["asyncflow"][metric]["median"]
                    line += f"   {other} {fmt(entry[other][metric])} ({ratio:.0f}× asyncflow)"
            print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
