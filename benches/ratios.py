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


def run_once(binary: str, group: str, filter_: str | None, seconds: float) -> dict[str, float]:
    """Medians (ns) of each case of `group` in one process."""
    pattern = f"{group}/" + (filter_ or "")
    out = subprocess.run(
        [binary, "--bench", pattern, "--measurement-time", str(seconds)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    medians = {}
    for m in LINE.finditer(out):
        name = m.group("name")
        if name.startswith(group + "/"):
            medians[name[len(group) + 1 :]] = float(m.group("median")) * UNITS[m.group("unit")]
    if "bare" not in medians:
        sys.exit(f"no `{group}/bare` in the output:\n{out}")
    return medians


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--group", required=True, help="criterion group (trace, observability, ...)")
    ap.add_argument("--reference", help="case whose added cost the others are divided by")
    ap.add_argument("--filter", help="regex after `GROUP/` (bare is always needed)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0, help="criterion measurement time")
    ap.add_argument("--binary", default=None)
    ap.add_argument("--json", help="write every run's medians to this file")
    args = ap.parse_args()
    binary = args.binary or newest_binary()
    runs = []
    for i in range(args.runs):
        medians = run_once(binary, args.group, args.filter, args.seconds)
        runs.append(medians)
        bare = medians["bare"]
        ref = medians.get(args.reference) if args.reference else None
        parts = []
        for case, ns in medians.items():
            if case == "bare":
                continue
            added = ns - bare
            ratio = f" ({added / (ref - bare):.2f}x)" if ref and ref > bare else ""
            parts.append(f"{case} +{added:.0f}{ratio}")
        print(f"run {i + 1}: bare {bare:.0f} ns; " + "; ".join(parts), flush=True)
    cases = [c for c in runs[0] if c != "bare"]
    print(f"\nmedians over {len(runs)} runs (ns added over bare; ratio to {args.reference}):")
    for case in cases:
        added = [r[case] - r["bare"] for r in runs if case in r]
        line = f"  {case}: +{statistics.median(added):.0f} (runs: {', '.join(f'{a:.0f}' for a in added)})"
        if args.reference and case != args.reference:
            ratios = [
                (r[case] - r["bare"]) / (r[args.reference] - r["bare"])
                for r in runs
                if case in r and r.get(args.reference, 0) > r["bare"]
            ]
            if ratios:
                line += f"; ratio {statistics.median(ratios):.2f}x (runs: {', '.join(f'{x:.2f}' for x in ratios)})"
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"binary": binary, "group": args.group, "runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
