#!/usr/bin/env python3
"""What a process's resident memory consists of, from /proc/PID/{status,smaps}.

Used by `scripts/bench --idle S`. Prints VmRSS and VmHWM, RssAnon/RssFile/RssShmem,
the thread count, and the resident KiB by kind of mapping:

  binary       the executable's own mappings (text, rodata, data): file-backed,
               shared with other workers of the same binary, dropped under pressure
  libraries    other file-backed mappings (libc, ld.so, locale files)
  heap         [heap] (brk): glibc's and libc's early allocations
  stacks       the main [stack], plus anonymous mappings that sit right after a
               guard page (PROT_NONE) the size of a thread stack: threads' stacks
  anon-large   anonymous mappings of 4 MiB or more: allocator arenas/segments
               (mimalloc reserves 1 GiB; only touched pages count)
  anon-other   every other anonymous mapping

With --json, one JSON object instead. Read-only; never signals the process.
"""

import json
import sys

KIB = 1024


def status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def kb(value):
    return int(value.split()[0]) if value else 0


def mappings(pid):
    """(start, end, perms, path, fields) per mapping of /proc/PID/smaps."""
    maps, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                start, end = (int(x, 16) for x in head[0].split("-"))
                path = " ".join(head[5:]) if len(head) > 5 else ""
                cur = {"start": start, "end": end, "perms": head[1], "path": path}
                maps.append(cur)
            elif cur is not None and head[0].endswith(":") and len(head) >= 2:
                try:
                    cur[head[0][:-1]] = int(head[1])
                except ValueError:
                    pass
    return maps


def classify(maps, exe):
    kinds = {k: 0 for k in ("binary", "libraries", "heap", "stacks", "anon-large", "anon-other")}
    prev = None
    for m in maps:
        rss = m.get("Rss", 0)
        size = m["end"] - m["start"]
        path = m["path"]
        if path == exe:
            kind = "binary"
        elif path == "[heap]":
            kind = "heap"
        elif path == "[stack]":
            kind = "stacks"
        elif path.startswith("/"):
            kind = "libraries"
        elif path.startswith("["):
            kind = "anon-other"  # [vdso], [vvar]
        elif (
            prev is not None
            and prev["perms"].startswith("---")
            and prev["end"] == m["start"]
            and size <= 16 << 20
            and prev["end"] - prev["start"] <= 64 * KIB
        ):
            kind = "stacks"
        elif size >= 4 << 20:
            kind = "anon-large"
        else:
            kind = "anon-other"
        kinds[kind] += rss
        prev = m
    return kinds


def main():
    args = [a for a in sys.argv[1:] if a != "--json"]
    if len(args) != 1:
        sys.exit("usage: rss-breakdown.py [--json] PID")
    pid = args[0]
    st = status(pid)
    exe = ""
    try:
        import os

        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        pass
    maps = mappings(pid)
    kinds = classify(maps, exe)
    result = {
        "pid": int(pid),
        "threads": int(st.get("Threads", "0")),
        "vm_rss_kib": kb(st.get("VmRSS")),
        "vm_hwm_kib": kb(st.get("VmHWM")),
        "rss_anon_kib": kb(st.get("RssAnon")),
        "rss_file_kib": kb(st.get("RssFile")),
        "rss_shmem_kib": kb(st.get("RssShmem")),
        "vm_size_kib": kb(st.get("VmSize")),
        "by_mapping_kib": kinds,
        "top_mappings": [
            {
                "rss_kib": m.get("Rss", 0),
                "size_kib": (m["end"] - m["start"]) // KIB,
                "perms": m["perms"],
                "path": m["path"] or "(anonymous)",
            }
            for m in sorted(maps, key=lambda m: -m.get("Rss", 0))[:8]
        ],
    }
    if "--json" in sys.argv[1:]:
        print(json.dumps(result, indent=2))
        return
    mib = lambda k: f"{k / KIB:.1f} MiB"  # noqa: E731
    print(
        f"RSS {mib(result['vm_rss_kib'])} (peak {mib(result['vm_hwm_kib'])}): "
        f"anon {mib(result['rss_anon_kib'])}, file {mib(result['rss_file_kib'])}, "
        f"shmem {mib(result['rss_shmem_kib'])}; {result['threads']} threads; "
        f"virtual {mib(result['vm_size_kib'])}"
    )
    print("  by mapping: " + ", ".join(f"{k} {mib(v)}" for k, v in kinds.items()))
    print("  largest resident mappings:")
    for m in result["top_mappings"]:
        print(f"    {m['rss_kib']:>7} KiB of {m['size_kib']:>8} KiB {m['perms']} {m['path']}")


if __name__ == "__main__":
    main()
