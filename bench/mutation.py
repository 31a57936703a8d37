"""Mutation testing of aotc's invariant modules with mutmut (a maintained tool): each mutant (one
deliberate bug) runs the fast tests that cover its module; a mutant the tests pass is a survivor.
Runs in a copy of the committed tree (git archive HEAD), so the checkout is never touched.

Every survivor is either killed by a test or explained in bench/mutation_equivalent.py (why no test
can tell it from the original); a "no tests" mutant is a survivor like any other. The results go to
bench/results/mutation.{json,md} per module: a run over some modules replaces only their rows.

    pip install -e '.[build,test]'     # brings mutmut
    python bench/mutation.py                          # every invariant module (hours on 2 cores)
    python bench/mutation.py --modules aotc/build/rules.py aotc/arch.py --max-children 1
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import runpy
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
# Compile-marked, but their kernels are tiny (seconds of nvcc, no CUTLASS), and they are the tests of the
# wheel check and of discovery: runs over those modules take them (the other compile tests stay out).
TINY_COMPILE = {"tests/test_fault_wheel.py": ["aotc/build/wheel_check.py", "aotc/runtime/installed_wheels.py"]}
# What those tests read besides the package (mutmut copies only what it is told to).
ALSO_COPY = ["templates", "tile_specs", "flashinfer_presets", "README.md", "docs"]

# Green without mutmut, red under its trampolines in the clean run (it counts a backend's class-level
# puts, which the instrumented module records twice): says nothing about a mutant.
UNDER_MUTMUT = ["tests/test_store.py::test_blob_store_env_selects_backend",
                # reads every os.environ name in the package's source, and mutmut's copies hold mutated
                # names ("XXAOTC_REMOTEXX") that no README lists
                "tests/test_cli_conventions.py::test_readme_tables_every_environment_variable_the_code_reads"]
# The tests noticed the mutant ("suspicious": their process ended oddly, e.g. by a signal the mutant sent).
DETECTED = ("killed", "timeout", "segfault", "suspicious")
# A mutant's tests run fastest first (times of the baseline run), so a kill rarely waits for a compile.
FAST_FIRST = """import json, pathlib
_SECONDS = json.loads(pathlib.Path(__file__).with_name("durations.json").read_text())
def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: _SECONDS.get(item.nodeid, 0.0))
"""
# With verify.py itself not mutated, a disassembler's output is a function of the tool and the bytes it
# reads: the wheel tests' SASS scans (0.5 s of each 0.55 s wheel check, cuobjdump run twice) are read
# from disk after the first mutant instead of run again. Only clean exits are kept, so a test's broken
# or missing tool still runs for real.
MEMO_DISASSEMBLY = """
import hashlib, os, tempfile
import aotc.build.verify as _verify
_MEMO = pathlib.Path(__file__).with_name("disassembly-memo")
_run_tool = _verify._run_tool
def _key(cmd):
    h = hashlib.sha256()
    for i, arg in enumerate(cmd):
        path = pathlib.Path(arg)
        if path.is_file():
            st = path.stat()
            h.update(f"{arg}|{st.st_size}|{st.st_mtime_ns}|".encode() if i == 0 else path.read_bytes())
        else:
            h.update(arg.encode())
        h.update(b"\\0")
    return h.hexdigest()
def _memo_run_tool(cmd):
    hit = _MEMO / _key(cmd)
    if hit.exists():
        return 0, hit.read_text()
    rc, out = _run_tool(cmd)
    if rc == 0:
        _MEMO.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=_MEMO)
        with os.fdopen(fd, "w") as f:
            f.write(out)
        os.replace(tmp, hit)
    return rc, out
_verify._run_tool = _memo_run_tool
"""


# Bytecode written: with PYTHONDONTWRITEBYTECODE set, every test process re-compiles aotc and pytest
# re-rewrites the tests' asserts, in every test process of the run.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(cmd: list[str], cwd: Path, timeout: float | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, timeout=timeout, env=CHILD_ENV)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", nargs="*", default=MODULES)
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--max-minutes", type=float, default=600.0, help="stop mutmut after this long")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "mutation"))
    ap.add_argument("--report-from", help="write the results of an earlier, interrupted run's folder")
    ap.add_argument("--rejudge", action="store_true",
                    help="apply bench/mutation_equivalent.py to the survivors already recorded, and rewrite the results")
    args = ap.parse_args()
    if args.rejudge:
        return rejudge(Path(args.out))
    if args.report_from:
        commit = run(["git", "rev-parse", "--short", "HEAD"], ROOT).stdout.strip()
        return report(Path(args.report_from), args, commit, TESTS, [], False, "report of an interrupted run", None)

    commit = run(["git", "rev-parse", "--short", "HEAD"], ROOT).stdout.strip()  # the tree the run tests
    work = Path(tempfile.mkdtemp(prefix="aotc-mutation-"))
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    tiny = [t for t, mods in TINY_COMPILE.items() if set(mods) & set(args.modules)]
    tests = TESTS + tiny
    collected = run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m",
                     "compile", *TESTS], work).stdout
    heavy = [ln.strip() for ln in collected.splitlines() if "::" in ln]
    # mutmut needs a green baseline: tests failing on the unmutated tree say nothing about mutants
    baseline = run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "-m", "not gpu",
                    f"--junitxml={work / 'baseline.xml'}", *[a for t in heavy for a in ("--deselect", t)], *tests], work)
    (work / "durations.json").write_text(json.dumps(durations(work / "baseline.xml")))
    (work / "conftest.py").write_text(FAST_FIRST + ("" if "aotc/build/verify.py" in args.modules else MEMO_DISASSEMBLY))
    failing = sorted(set(re.findall(r"^FAILED (\S+)", baseline.stdout, flags=re.MULTILINE)) | set(UNDER_MUTMUT))
    (work / "setup.cfg").write_text(
        # a mutant that hangs (e.g. a FIFO opened without O_NONBLOCK) is stopped after 3x, not 15x, its tests' time
        "[mutmut]\nsource_paths=aotc\ntimeout_multiplier=3.0\n"
        + "only_mutate=\n" + "".join(f"    {m}\n" for m in args.modules)
        + "pytest_add_cli_args_test_selection=\n" + "".join(f"    {t}\n" for t in tests)
        + "pytest_add_cli_args=\n    -m\n    not gpu\n    -p\n    no:cacheprovider\n"
        + "".join(f"    --deselect\n    {t}\n" for t in heavy + failing)
        + "also_copy=\n" + "".join(f"    {p}\n" for p in [*ALSO_COPY, "conftest.py", "durations.json"]))
    started = time.monotonic()
    try:
        proc = run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)], work,
                   timeout=args.max_minutes * 60)
        finished = proc.returncode == 0
        log = proc.stdout[-4000:] + proc.stderr[-4000:]
    except subprocess.TimeoutExpired as e:
        finished, log = False, f"stopped after {args.max_minutes} min: {str(e.stdout or '')[-2000:]}"
    return report(work, args, commit, tests, failing, finished, log, (time.monotonic() - started) / 60)


def durations(junit_xml: Path) -> dict[str, float]:
    """Seconds per test node id from pytest's JUnit XML (classname tests.test_x -> tests/test_x.py)."""
    import xml.etree.ElementTree as ET

    if not junit_xml.exists():
        return {}
    return {f"{c.get('classname', '').replace('.', '/')}.py::{c.get('name')}": float(c.get("time", 0))
            for c in ET.parse(junit_xml).iter("testcase")}


def module_of(mutant: str, modules: list[str]) -> str | None:
    """aotc.build.rules.x_check__mutmut_3 -> aotc/build/rules.py (None: not one of `modules`)."""
    return next((m for m in modules if mutant.startswith(m.removesuffix(".py").replace("/", ".") + ".")), None)


def mutated_lines(diff: str) -> list[str]:
    return [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]


def judge(statuses: dict[str, str], diffs: dict[str, str], explained: dict[str, tuple[str, str]]) -> dict:
    """Per-module verdicts: detected, equivalent (explained, and the explanation still names this
    mutation: mutant numbers shift when the code changes) or survived (incl. no tests)."""
    out = {"counts": {}, "equivalent": {}, "survivors": {}, "stale_explanations": []}
    for name, status in sorted(statuses.items()):
        out["counts"][status] = out["counts"].get(status, 0) + 1
        if status in DETECTED or status == "not checked":
            continue
        line, why = explained.get(name, (None, None))
        if line is not None and line.strip() in mutated_lines(diffs[name]):
            out["equivalent"][name] = why
        else:
            if line is not None:
                out["stale_explanations"].append(name)
            out["survivors"][name] = {"status": status, "diff": diffs[name]}
    detected = sum(out["counts"].get(s, 0) for s in DETECTED)
    judged = sum(out["counts"].values()) - out["counts"].get("not checked", 0) - len(out["equivalent"])
    out.update(detected=detected, judged=judged, kill_rate=round(detected / judged, 4) if judged else None)
    return out


def report(work: Path, args, commit: str, tests: list[str], failing: list[str], finished: bool, log: str,
           minutes: float | None) -> int:
    """Read mutmut's verdicts in `work` and update bench/results/mutation.{json,md} for the modules run."""
    results = run([sys.executable, "-m", "mutmut", "results", "--all", "true"], work).stdout
    statuses: dict[str, dict[str, str]] = {m: {} for m in args.modules}
    diffs: dict[str, str] = {}
    for line in results.splitlines():
        m = re.match(r"\s*(\S+):\s*(\w[\w ]*)$", line)
        if m and module_of(m.group(1), args.modules):
            statuses[module_of(m.group(1), args.modules)][m.group(1)] = m.group(2).strip()
            if m.group(2).strip() not in (*DETECTED, "not checked"):
                diffs[m.group(1)] = run([sys.executable, "-m", "mutmut", "show", m.group(1)], work).stdout[-1500:]
    explained = runpy.run_path(str(ROOT / "bench" / "mutation_equivalent.py"))["EQUIVALENT"]
    out = Path(args.out)
    old = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    kept = old.get("modules")
    data = {"modules": kept if isinstance(kept, dict) else {}}  # (older files: one run, no rows)
    run_info = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores)", "commit": commit,
                "command": " ".join(["python", "bench/mutation.py", *sys.argv[1:]]), "finished": finished,
                "minutes": round(minutes, 1) if minutes is not None else None,
                "tests": tests, "deselected_failing_at_baseline": failing, "log_tail": log}
    for module, st in statuses.items():
        if st:
            data["modules"][module] = {**run_info, **judge(st, diffs, explained)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    out.with_suffix(".md").write_text(markdown(data))
    if not args.report_from:
        shutil.rmtree(work, ignore_errors=True)
    for module, st in statuses.items():
        r = data["modules"].get(module)
        if r and st:
            print(f"{module}: {r['detected']}/{r['judged']} killed, {len(r['equivalent'])} equivalent, "
                  f"{len(r['survivors'])} survived")
    return 0


def rejudge(out: Path) -> int:
    """Explanations written after a run: move the recorded survivors they name (same mutated line) to
    the equivalent ones, and recompute the rates; the mutants' verdicts are not run again."""
    explained = runpy.run_path(str(ROOT / "bench" / "mutation_equivalent.py"))["EQUIVALENT"]
    data = json.loads(out.with_suffix(".json").read_text())
    for r in data["modules"].values():
        for name, s in list(r["survivors"].items()):
            line, why = explained.get(name, (None, None))
            if line is not None and line.strip() in mutated_lines(s["diff"]):
                r["equivalent"][name] = why
                del r["survivors"][name]
                r["stale_explanations"] = [n for n in r["stale_explanations"] if n != name]
        r["judged"] = sum(r["counts"].values()) - r["counts"].get("not checked", 0) - len(r["equivalent"])
        r["kill_rate"] = round(r["detected"] / r["judged"], 4) if r["judged"] else None
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    out.with_suffix(".md").write_text(markdown(data))
    return 0


def markdown(data: dict) -> str:
    mods = data["modules"]
    lines = ["# Mutation testing (mutmut) of aotc's invariant modules", "",
             ("Each mutant is one deliberate bug in the module; the fast invariant tests "
              "(each row's `tests` in mutation.json) run against it. Killed: a test failed (or timed out). Equivalent: "
              "explained in bench/mutation_equivalent.py (no test can tell it from the original, or it only "
              "rewords a message whose facts the tests pin). Survived: neither, including mutants no test reaches. "
              "Not run: left when the run hit its time limit. Kill rate = killed / (mutants run - explained)."), "",
             ("| module | mutants | killed | explained: equivalent + wording only | survived | not run | kill rate "
              "| commit | date | machine | minutes |"), "|---|---|---|---|---|---|---|---|---|---|---|"]
    for module, r in sorted(mods.items()):
        total = sum(r["counts"].values())
        wording = sum(why.startswith("message wording only") for why in r["equivalent"].values())
        rate = f"{100 * r['kill_rate']:.1f}%" if r["kill_rate"] is not None else "-"
        later = len(r.get("killed_after_run", {}))
        killed = f"{r['detected']} ({later} by tests added after the run)" if later else r["detected"]
        lines.append(f"| {module} | {total} | {killed} | {len(r['equivalent']) - wording} + {wording} "
                     f"| {len(r['survivors'])} | {r['counts'].get('not checked', 0)} | {rate} | {r['commit']} "
                     f"| {r['date']} | {r['machine']} | {r['minutes']}{'' if r['finished'] else ' (stopped early)'} |")
    lines += ["", "Commands: " + "; ".join(sorted({f"`{r['command']}`" for r in mods.values()})), ""]
    for module, r in sorted(mods.items()):
        if r["survivors"]:
            lines += [f"## Survivors in {module} (each needs a test, or an explanation)", ""]
            for name, s in r["survivors"].items():
                stale = " (its explanation names another mutation: stale)" if name in r["stale_explanations"] else ""
                lines += [f"### {name}: {s['status']}{stale}", "```diff", s["diff"].strip(), "```", ""]
    for module, r in sorted(mods.items()):
        if r.get("killed_after_run"):  # survivors of the run a test added since kills (each applied by hand)
            lines += [f"## Survivors in {module} killed by tests added after the run", "",
                      ("Verified by applying each mutant's diff by hand and running the test, not by "
                       "running mutmut again; `counts` in mutation.json are the run's own."), ""]
            lines += [f"- `{name}`: {', '.join(f'`{t}`' for t in tests)}"
                      for name, tests in r["killed_after_run"].items()]
            lines += [""]
    for module, r in sorted(mods.items()):
        if r.get("resolved_after_run"):  # survivors whose behaviour the code took on after the run
            lines += [f"## Survivors in {module} resolved by a change after the run", "",
                      ("The mutant showed the check doing something other than the runtime; the code was changed "
                       "to behave as the mutant did, so the mutated line no longer exists. Not counted as killed: "
                       "the kill rate stays the run's own."), ""]
            lines += [f"- `{name}`: {why}" for name, why in r["resolved_after_run"].items()]
            lines += [""]
    lines += ["## Equivalent mutants and why", ""]
    for module, r in sorted(mods.items()):
        lines += [f"- `{name}`: {why}" for name, why in r["equivalent"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
