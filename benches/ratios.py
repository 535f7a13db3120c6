#!/usr/bin/env python3
"""Runs one criterion group of benches/compare.rs several times and reports, per run, each
case's cost added over the group's `bare` case and its ratio to a reference case's added cost,
then the medians over the runs.

On a shared 2-core machine one run can move by 2x (the batch exporters' threads and the
allocator contend with the measured thread); every ratio here is taken within one run, and the
median over runs is what BENCHMARKS.md quotes.

    cargo bench --bench compare --no-run
    python3 benches/ratios.py --group trace --reference axum_tracing_opentelemetry --runs 5
    python3 benches/ratios.py --group observability --reference tower_http+axum_prometheus

The pinned method (BENCHMARKS.md): `--cpu 1` runs every process under `taskset -c 1`, so the
export threads' work is counted in the request's time; `--isolate` runs each named case in a
process of its own beside its own `bare` (the cases' exporters, reporters and subscribers are
global to a process), the cases in a rotating order from run to run; a run's ratios are taken
between the processes of that run. `--reference` may name several cases.
`--clock process_cpu` has the bench measure the CPU time of its whole process instead of wall
time (`COMPARE_CLOCK=process_cpu`): the export threads' work still counts, other jobs' time
slices on the same core do not.

    python3 benches/ratios.py --group trace --cpu 1 --runs 5 \\
        --isolate axum_tracing_opentelemetry,fastrace_axum,towerscope/sampled \\
        --reference fastrace_axum,axum_tracing_opentelemetry

Python 3.11 standard library only. `--binary` names a built bench binary (default: the newest
`target/release/deps/compare-*`).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys

UNITS = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
LINE = re.compile(
    r"^(?P<name>\S+)\s*\n?\s*time:\s+\[\S+ \S+ (?P<median>[\d.]+) (?P<unit>\S+) \S+ \S+\]",
    re.M,
)


def newest_binary() -> str:
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    found = [
        p
        for p in glob.glob(os.path.join(target, "release/deps/compare-*"))
        if not p.endswith(".d") and os.access(p, os.X_OK)
    ]
    if not found:
        sys.exit("no bench binary: run `cargo bench --bench compare --no-run` first")
    return max(found, key=os.path.getmtime)


def run_once(
    binary: str, group: str, filter_: str | None, seconds: float, cpu: str | None, clock: str
) -> dict[str, float]:
    """Medians (ns) of each case of `group` in one process."""
    pattern = f"{group}/" + (filter_ or "")
    command = [binary, "--bench", pattern, "--measurement-time", str(seconds)]
    if cpu is not None:
        command = ["taskset", "-c", cpu, *command]
    env = dict(os.environ, COMPARE_CLOCK=clock)
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    medians = {}
    for m in LINE.finditer(out):
        name = m.group("name")
        if name.startswith(group + "/"):
            medians[name[len(group) + 1 :]] = float(m.group("median")) * UNITS[m.group("unit")]
    if "bare" not in medians:
        sys.exit(f"no `{group}/bare` in the output:\n{out}")
    return medians


def isolated_run(args: argparse.Namespace, binary: str, index: int) -> tuple[dict, dict]:
    """One process per case, each beside its own `bare`; the order rotates with `index`.
    Returns (added ns per case, bare ns per case)."""
    cases = args.isolate.split(",")
    shift = index % len(cases)
    added, bares = {}, {}
    for case in cases[shift:] + cases[:shift]:
        medians = run_once(
            binary, args.group, f"(bare|{re.escape(case)})$", args.seconds, args.cpu, args.clock
        )
        if case not in medians:
            sys.exit(f"no `{args.group}/{case}` in the output")
        added[case] = medians[case] - medians["bare"]
        bares[case] = medians["bare"]
    return {c: added[c] for c in cases}, {c: bares[c] for c in cases}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--group", required=True, help="criterion group (trace, observability, ...)")
    ap.add_argument(
        "--reference", help="case(s), comma-separated, whose added cost the others are divided by"
    )
    ap.add_argument("--filter", help="regex after `GROUP/` (bare is always needed)")
    ap.add_argument(
        "--isolate",
        help="comma-separated cases, each run in a process of its own with `bare` "
        "(instead of --filter)",
    )
    ap.add_argument("--cpu", help="run every process under `taskset -c CPU`")
    ap.add_argument(
        "--clock",
        choices=["wall", "process_cpu"],
        default="wall",
        help="what criterion measures (COMPARE_CLOCK): wall time, or the CPU time of the "
        "bench's whole process (every thread's, no other process's)",
    )
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0, help="criterion measurement time")
    ap.add_argument("--binary", default=None)
    ap.add_argument("--json", help="write every run's figures to this file")
    args = ap.parse_args()
    binary = args.binary or newest_binary()
    references = args.reference.split(",") if args.reference else []
    runs = []  # per run: {"added": {case: ns}, "bare": ns or {case: ns}}
    for i in range(args.runs):
        if args.isolate:
            added, bare = isolated_run(args, binary, i)
            bare_text = "bare " + "/".join(f"{b:.0f}" for b in bare.values()) + " ns"
        else:
            medians = run_once(
                binary, args.group, args.filter, args.seconds, args.cpu, args.clock
            )
            bare = medians.pop("bare")
            added = {case: ns - bare for case, ns in medians.items()}
            bare_text = f"bare {bare:.0f} ns"
        runs.append({"added": added, "bare": bare})
        parts = []
        for case, ns in added.items():
            ratios = "".join(
                f" ({ns / added[r]:.2f}x {r})"
                for r in references
                if r in added and r != case and added[r] > 0
            )
            parts.append(f"{case} +{ns:.0f}{ratios}")
        print(f"run {i + 1}: {bare_text}; " + "; ".join(parts), flush=True)
    cases = list(runs[0]["added"])
    print(f"\nmedians over {len(runs)} runs (ns added over bare; ratios to {args.reference}):")
    for case in cases:
        added = [r["added"][case] for r in runs if case in r["added"]]
        line = f"  {case}: +{statistics.median(added):.0f} (runs: {', '.join(f'{a:.0f}' for a in added)})"
        for reference in references:
            if reference == case:
                continue
            ratios = [
                r["added"][case] / r["added"][reference]
                for r in runs
                if case in r["added"] and r["added"].get(reference, 0) > 0
            ]
            if ratios:
                line += (
                    f"; ÷ {reference} {statistics.median(ratios):.2f}x "
                    f"(runs: {', '.join(f'{x:.2f}' for x in ratios)}; "
                    f"{min(ratios):.2f}–{max(ratios):.2f})"
                )
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "binary": binary,
                    "group": args.group,
                    "cpu": args.cpu,
                    "clock": args.clock,
                    "isolate": args.isolate,
                    "runs": runs,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
