#!/usr/bin/env python3
"""Where a zero-logs worker's CPU goes, from `perf script -F comm,ip,sym` on stdin.

Reads call-graph samples (record with `perf record --call-graph dwarf`), and prints:
1. per module: each sample is charged to the innermost `zero_logs::<module>` frame on
   its stack (kernel and library time included: a `write` under the spool writer counts
   as the spool writer's), or to "outside zero_logs" when no frame of ours is there;
2. the top leaf functions (self time), as a flat profile;
3. with an argument MODULE (e.g. `spool::writer`), that module's leaf functions.

Usage (docs/BENCHMARKS.md, "Profile"):
    perf record -F 199 --call-graph dwarf,32768 -p PID -o worker.perf -- sleep 10
    perf script -i worker.perf -F comm,ip,sym | scripts/lib/perf-stages.py [MODULE]
"""
import collections
import re
import sys

OURS = re.compile(r"zero_logs::([a-z_]+(?:::[a-z_]+)?)")
TOP = 20


def samples(lines):
    """Yields each sample's frames, innermost first (perf script's order)."""
    frames = []
    for line in lines:
        if not line.strip():
            if frames:
                yield frames
            frames = []
        elif line[0] in " \t":
            parts = line.strip().split(" ", 1)
            symbol = parts[1] if len(parts) > 1 else parts[0]
            symbol = re.sub(r" \(.*\)$", "", symbol)
            frames.append(re.sub(r"\+0x[0-9a-f]+$", "", symbol))
    if frames:
        yield frames


def module_of(frames):
    for frame in frames:
        found = OURS.search(frame)
        if found:
            return found.group(1), frame
    return "outside zero_logs (runtime, hyper, kernel)", None


def main():
    want = sys.argv[1] if len(sys.argv) > 1 else None
    modules, leaves, inside = (collections.Counter() for _ in range(3))
    total = 0
    for frames in samples(sys.stdin):
        total += 1
        module, _ = module_of(frames)
        modules[module] += 1
        leaves[frames[0][:100]] += 1
        if module == want:
            inside[frames[0][:100]] += 1
    if total == 0:
        sys.exit("perf-stages: no samples on stdin (perf script -F comm,ip,sym …)")
    share = lambda n: f"{100 * n / total:5.1f} %"
    print(f"{total} samples\n\n| CPU | module (innermost zero_logs frame) |\n|---|---|")
    for name, n in modules.most_common(TOP):
        print(f"| {share(n)} | `{name}` |")
    print(f"\n| CPU | leaf function (self) |\n|---|---|")
    for name, n in leaves.most_common(TOP):
        print(f"| {share(n)} | `{name}` |")
    if want:
        print(f"\n| CPU | leaf function under `{want}` |\n|---|---|")
        for name, n in inside.most_common(TOP):
            print(f"| {share(n)} | `{name}` |")


if __name__ == "__main__":
    main()
