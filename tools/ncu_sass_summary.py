"""Summarise Nsight Compute's per-instruction SASS page (`ncu --page source --print-source sass --csv`,
as tools/device_ncu_fmha.sh writes it): per kernel, executed instructions and warp-stall samples by
opcode, the stall reasons of the hottest opcodes, and the instructions with the most long-scoreboard
stalls with their neighbours. Markdown on stdout.

    python tools/ncu_sass_summary.py ncu_fmha_fwd_d256_sass.csv > summary.md
"""

from __future__ import annotations

import argparse
import collections
import csv
import io
import sys
from pathlib import Path

REASONS = ["stall_short_sb", "stall_long_sb", "stall_wait", "stall_barrier", "stall_mio", "stall_math",
           "stall_selected", "stall_not_selected", "stall_dispatch", "stall_branch_resolving", "stall_no_inst", "stall_lg"]


def kernels(text: str) -> list[tuple[str, list[dict]]]:
    """[(kernel name, rows)] from the CSV page: each kernel's table starts at a "Kernel Name" line."""
    out, lines = [], None
    for line in text.splitlines():
        if line.startswith('"Kernel Name"'):
            name = next(csv.reader([line]))[1]
            lines = []
            out.append((name, lines))
        elif lines is not None:
            lines.append(line)
    result = []
    for name, body in out:
        rows = list(csv.reader(io.StringIO("\n".join(body))))
        header = rows[0]
        result.append((name, [dict(zip(header, r)) for r in rows[1:] if len(r) == len(header)]))
    return result


def opcode(source: str) -> str:
    words = source.split()
    op = words[1] if words and words[0].startswith("@") else (words[0] if words else "?")
    return op.split(".")[0]


def num(row: dict, key: str) -> int:
    return int(row.get(key) or 0)


def summary(name: str, rows: list[dict], top: int = 12) -> str:
    executed, samples = collections.Counter(), collections.Counter()
    reasons: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    totals = collections.Counter()
    for r in rows:
        op = opcode(r["Source"])
        executed[op] += num(r, "Instructions Executed")
        samples[op] += num(r, "Warp Stall Sampling (All Samples)")
        for reason in REASONS:
            reasons[op][reason] += num(r, reason)
            totals[reason] += num(r, reason)
    all_samples = sum(samples.values()) or 1
    out = [f"### {name[:160]}", "",
           f"- executed instructions (warp level): {sum(executed.values()):,}; stall samples: {sum(samples.values()):,}",
           "- stall samples by reason: " + ", ".join(f"{k.removeprefix('stall_')} {v:,}" for k, v in totals.most_common()
                                                     if v), "",
           "| opcode | executed | stall samples | share | top reasons |", "|---|---|---|---|---|"]
    for op, n in samples.most_common(top):
        why = ", ".join(f"{k.removeprefix('stall_')} {v:,}" for k, v in reasons[op].most_common(3) if v)
        out.append(f"| {op} | {executed[op]:,} | {n:,} | {n / all_samples:.1%} | {why} |")
    hot = sorted(range(len(rows)), key=lambda i: -num(rows[i], "stall_long_sb"))[:3]
    for i in hot:
        if not num(rows[i], "stall_long_sb"):
            break
        out += ["", f"Long-scoreboard stalls at instruction {i} ({num(rows[i], 'stall_long_sb'):,} samples):", "```"]
        for j in range(max(0, i - 5), min(len(rows), i + 2)):
            out.append(f"{rows[j]['Source'].strip():70s} samples {num(rows[j], 'Warp Stall Sampling (All Samples)'):>6,}")
        out.append("```")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    args = parser.parse_args(argv)
    for name, rows in kernels(args.csv.read_text()):
        print(summary(name, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
