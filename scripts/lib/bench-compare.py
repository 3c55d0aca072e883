#!/usr/bin/env python3
"""Prints one load run's key metrics (scripts/bench's JSON result), or their change
against a saved run: `bench-compare.py RUN.json [BASE.json] [--noise PCT]`.

Used by `scripts/bench --save FILE / --compare BASE.json`. Standard library only
(jq is not among the project's dependencies).
"""

import argparse
import json
import sys

# (label, path in the JSON, unit, which way is better: +1 higher, -1 lower, 0 neither)
METRICS = [
    ("records/s", ("records_per_s",), "", +1),
    ("worker CPU per record", ("worker", "cpu_us_per_record"), "µs", -1),
    ("latency p50", ("latency_ms", "p50"), "ms", -1),
    ("latency p99", ("latency_ms", "p99"), "ms", -1),
    ("worker peak RSS", ("worker", "peak_rss_bytes"), "MiB", -1),
    ("failed requests", ("requests", "failed"), "", -1),
    ("records lost", ("clickhouse", "lost"), "", -1),
]


def value(result, path):
    for key in path:
        if not isinstance(result, dict):
            return None
        result = result.get(key)
    return result


def shown(v, unit):
    if v is None:
        return "—"
    if unit == "MiB":
        return f"{v / 1048576:.1f} MiB"
    if unit in ("ms", "µs"):
        return f"{v:.3f} {unit}"
    return f"{int(v):,} {unit}".replace(",", " ").strip()


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"bench-compare: cannot read {path}: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("base", nargs="?")
    ap.add_argument("--noise", type=float, default=10.0,
                    help="percent change taken as noise (default 10: this VM's run-to-run spread)")
    args = ap.parse_args()
    run = load(args.run)
    base = load(args.base) if args.base else None

    rows = []
    flagged = 0
    for label, path, unit, better in METRICS:
        now = value(run, path)
        if base is None:
            rows.append((label, shown(now, unit)))
            continue
        was = value(base, path)
        delta, mark = "—", ""
        if isinstance(now, (int, float)) and isinstance(was, (int, float)):
            if was:
                pct = (now - was) / was * 100
                delta = f"{pct:+.1f} %"
                if abs(pct) > args.noise:
                    mark = "better" if pct * better > 0 else "WORSE"
            elif now == was:
                delta = "±0"
            else:
                delta = "new"
                mark = "WORSE" if better < 0 else ""
        if mark == "WORSE":
            flagged += 1
        rows.append((label, shown(was, unit), shown(now, unit), delta, mark))

    if base is None:
        header = ("metric", "this run")
    else:
        header = ("metric", "base", "this run", "delta", f"beyond ±{args.noise:g} %")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for r in [header] + rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    if base is not None:
        load_keys = ("protocol", "connections", "batch_records", "offered_requests_per_s")
        differ = [k for k in load_keys if run.get(k) != base.get(k)]
        if differ:
            print(f"note: the runs differ in {', '.join(differ)}: not the same load")
        print(f"{flagged} metric(s) worse beyond the noise threshold"
              if flagged else "no metric worse beyond the noise threshold")


if __name__ == "__main__":
    main()
