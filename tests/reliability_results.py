"""Counts of the fault-injection suites (rounds, kills, flips, cases, outcomes), merged into
bench/results/reliability.json and rendered to reliability.md after each suite, with the machine,
the date and the command. AOTC_RELIABILITY_RESULTS=<dir> writes elsewhere; =off writes nothing."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _out_dir() -> Path | None:
    setting = os.environ.get("AOTC_RELIABILITY_RESULTS", "")
    if setting == "off":
        return None
    return Path(setting) if setting else ROOT / "bench" / "results"


def record(suite: str, **counts: object) -> None:
    """Merge one suite's counts (replacing its previous ones) and rewrite both files."""
    out = _out_dir()
    if out is None:
        return
    path = out / "reliability.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data.setdefault("suites", {})[suite] = {
        "counts": counts,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}, CI={os.environ.get('CI', 'false')})",
        "command": " ".join(["pytest", *sys.argv[1:]]),
    }
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    lines = ["# Reliability: fault-injection counts", "",
             ("Written by the fault-injection tests each run (tests/reliability_results.py); one section per "
              "suite, the latest run of each, with `passed` saying whether its assertions held. The tests fail "
              "on any lost, corrupt or wrongly loaded entry, any uncaught exception or any case over its "
              "deadline."), ""]
    for name, entry in sorted(data["suites"].items()):
        lines += [f"## {name}", "", f"- date: {entry['date']}", f"- machine: {entry['machine']}",
                  f"- command: `{entry['command']}`", "", "| count | value |", "|---|---|"]
        lines += [f"| {k} | {v:,} |" if isinstance(v, int) else f"| {k} | {v} |"
                  for k, v in sorted(entry["counts"].items())]
        lines.append("")
    (out / "reliability.md").write_text("\n".join(lines))
