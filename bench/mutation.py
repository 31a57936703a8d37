"""Mutation testing of aotc's invariant modules with mutmut (a maintained tool): each mutant (one
deliberate bug) runs the fast tests that cover its module; a mutant the tests pass is a survivor.
Runs in a copy of the committed tree (git archive HEAD), so the checkout is never touched, and
writes the kill rate and every survivor's diff to bench/results/mutation.{json,md}.

    pip install -e '.[build,test]'     # brings mutmut
    python bench/mutation.py                          # every invariant module (hours on 2 cores)
    python bench/mutation.py --modules aotc/build/rules.py aotc/arch.py --max-children 2
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The invariants the issue names: rules, verify, store, arch, spec, wheel check, kernel-wheel discovery.
MODULES = ["aotc/build/rules.py", "aotc/build/verify.py", "aotc/cache/store.py", "aotc/arch.py",
           "aotc/build/spec.py", "aotc/build/wheel_check.py", "aotc/runtime/installed_wheels.py"]
# Fast tests (no compiler) that state those invariants; the compile-marked ones are left out.
TESTS = ["tests/test_mutants.py", "tests/test_fault_spec.py", "tests/test_rules.py", "tests/test_arch.py",
         "tests/test_spec.py", "tests/test_store.py", "tests/test_fault_cache.py", "tests/test_verify.py",
         "tests/test_elf.py",
         # arch spellings (12.0a, sm_120a) and target preference are pinned here, not in test_arch.py
         "tests/test_cli_conventions.py", "tests/test_runtime.py"]

# Green without mutmut, red under its trampolines in the clean run (it counts a backend's class-level
# puts, which the instrumented module records twice): says nothing about a mutant.
UNDER_MUTMUT = ["tests/test_store.py::test_blob_store_env_selects_backend"]


def run(cmd: list[str], cwd: Path, timeout: float | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, timeout=timeout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", nargs="*", default=MODULES)
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--max-minutes", type=float, default=600.0, help="stop mutmut after this long")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "mutation"))
    ap.add_argument("--report-from", help="write the results of an earlier, interrupted run's folder")
    args = ap.parse_args()
    if args.report_from:
        return report(Path(args.report_from), args, [], False, "report of an interrupted run", None)

    work = Path(tempfile.mkdtemp(prefix="aotc-mutation-"))
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    # mutmut needs a green baseline: tests failing on the unmutated tree say nothing about mutants
    baseline = run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "-m",
                    "not compile and not gpu", *TESTS], work)
    failing = sorted(set(re.findall(r"^FAILED (\S+)", baseline.stdout, flags=re.MULTILINE)) | set(UNDER_MUTMUT))
    (work / "setup.cfg").write_text(
        "[mutmut]\nsource_paths=aotc\n"
        + "only_mutate=\n" + "".join(f"    {m}\n" for m in args.modules)
        + "pytest_add_cli_args_test_selection=\n" + "".join(f"    {t}\n" for t in TESTS)
        + "pytest_add_cli_args=\n    -m\n    not compile and not gpu\n    -p\n    no:cacheprovider\n"
        + "".join(f"    --deselect\n    {t}\n" for t in failing)
        + "also_copy=\n    templates\n    tile_specs\n    flashinfer_presets\n")
    started = time.monotonic()
    try:
        proc = run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)], work,
                   timeout=args.max_minutes * 60)
        finished = proc.returncode == 0
        log = proc.stdout[-4000:] + proc.stderr[-4000:]
    except subprocess.TimeoutExpired as e:
        finished, log = False, f"stopped after {args.max_minutes} min: {str(e.stdout or '')[-2000:]}"
    return report(work, args, failing, finished, log, (time.monotonic() - started) / 60)


def report(work: Path, args, failing: list[str], finished: bool, log: str, minutes: float | None) -> int:
    """Read mutmut's verdicts in `work` and write bench/results/mutation.{json,md}."""
    commit = run(["git", "rev-parse", "--short", "HEAD"], ROOT).stdout.strip()
    results = run([sys.executable, "-m", "mutmut", "results", "--all", "true"], work).stdout
    status: dict[str, str] = {}
    for line in results.splitlines():
        m = re.match(r"\s*(\S+):\s*(\w[\w ]*)$", line)
        if m:
            status[m.group(1)] = m.group(2).strip()
    counts: dict[str, int] = {}
    for s in status.values():
        counts[s] = counts.get(s, 0) + 1
    killed = counts.get("killed", 0)
    judged = killed + counts.get("survived", 0)
    survivors = {}
    for name, s in sorted(status.items()):
        if s == "survived":
            survivors[name] = run([sys.executable, "-m", "mutmut", "show", name], work).stdout[-1500:]
    data = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores)", "commit": commit,
            "command": " ".join(["python", "bench/mutation.py", *sys.argv[1:]]), "modules": args.modules,
            "tests": TESTS, "deselected_failing_at_baseline": failing, "finished": finished,
            "minutes": round(minutes, 1) if minutes is not None else None, "counts": counts,
            "kill_rate": round(killed / judged, 4) if judged else None, "survivors": survivors, "log_tail": log}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    lines = ["# Mutation testing (mutmut) of aotc's invariant modules", "",
             f"- date: {data['date']}; machine: {data['machine']}; commit {commit}",
             f"- command: `{data['command']}` ({data['minutes']} min, {'finished' if finished else 'stopped early'})",
             f"- modules: {', '.join(args.modules)}", f"- tests: {', '.join(TESTS)}",
             f"- deselected (failing before any mutation): {', '.join(failing) or 'none'}", "",
             f"Kill rate: **{killed} / {judged}** killed of the mutants judged"
             + (f" = {100 * killed / judged:.1f}%" if judged else ""), "",
             "| outcome | mutants |", "|---|---|", *[f"| {k} | {v} |" for k, v in sorted(counts.items())], "",
             "## Survivors (each needs a test, or a note why it is equivalent)", ""]
    for name, diff in survivors.items():
        lines += [f"### {name}", "```diff", diff.strip(), "```", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    if not args.report_from:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{killed}/{judged} killed; {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
