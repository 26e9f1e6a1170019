"""Run a command and report the machine's peak memory in use while it ran (Linux: /proc/meminfo).

Usage: python tools/peak_memory.py [--every SECONDS] -- COMMAND [ARG ...]
e.g.   python tools/peak_memory.py -- make unit
Memory in use is MemTotal - MemAvailable, sampled every SECONDS (default 5), so it counts every process
on the machine, the command's workers included; a peak shorter than the interval can be missed. On a
machine others are using too, the command's own share is the second figure: the peak of the summed
resident memory (VmRSS) of the command and every process it started, sampled alike.
The command's exit status is returned.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def in_use_mib() -> int:
    """MemTotal - MemAvailable, in MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    kib = int(fields["MemTotal"].split()[0]) - int(fields["MemAvailable"].split()[0])
    return kib // 1024


def tree_rss_mib(root: int) -> int:
    """The summed VmRSS of process root and its descendants, in MiB (processes that end meanwhile are skipped)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = dict(line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line)
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields["PPid"].split()[0]), []).append(pid)
        rss[pid] = int(fields["VmRSS"].split()[0]) if "VmRSS" in fields else 0
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total // 1024


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    before = peak = in_use_mib()
    own = 0
    start = time.monotonic()
    with subprocess.Popen(command) as process:
        while process.poll() is None:
            peak = max(peak, in_use_mib())
            own = max(own, tree_rss_mib(process.pid))
            time.sleep(args.every)
    total = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    print(
        f"peak memory in use: {peak} MiB of {total} MiB ({before} MiB before the command); the command's own "
        f"processes at most {own} MiB resident together; {time.monotonic() - start:.0f} s, sampled every "
        f"{args.every:g} s",
        file=sys.stderr,
    )
    return process.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
