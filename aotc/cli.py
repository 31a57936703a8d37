"""Command line: `aotc check | build | ls | show | verify | gc | explain | doctor | families`.
Parses arguments, calls one module per verb, prints for people (or --json for scripts), and maps
outcomes to exit codes: 0 all good, 1 something rejected or failed, 2 bad usage or environment.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from aotc.arch import ARCHES, UnknownArchError, parse_arch_list
from aotc.diagnostics import AotcError, Diagnostic, did_you_mean

EXAMPLES = """\
examples:
  aotc check                          validate the default catalog for sm120a (milliseconds, no GPU)
  aotc check --arch sm120a,sm90a my_specs.toml
  aotc build --arch sm120a            build every catalog kernel for SM120 into the cache
  aotc build --arch sm90a --filter grouped_gemm_sm80 -j 4
  aotc build --arch sm120a --flashinfer sm120    FlashInfer's own SM120 modules, ahead of time
  aotc ls                             what the cache holds
  aotc report --arch sm120a,sm120f --out report   an HTML page of every kernel's SMEM against the budget
  aotc explain moe_w4a4/tile=128x128x128 --arch sm120a
  aotc build --arch sm120a --dry-run  what the cache holds, what would compile, an estimated time
  aotc stats                          entries, bytes, hits and misses since `aotc stats --zero`
  aotc verify                         re-hash every stored blob; quarantine corrupt ones
  aotc gc --max-age-days 30 --dry-run show what dropping entries built over 30 days ago would remove
  aotc wheel --arch sm120a,sm120f --out dist   pack the cache into per-arch and combined wheels
  aotc wheel --check dist/aotc_kernels_sm120a-*.whl --arch sm120a
  aotc doctor                         toolchain, CUTLASS, memory and GPU as aotc sees them
  aotc tune --family fmha_fwd         time the stored FMHA tiles on this GPU; the runtime then uses the fastest

cache location: --cache-dir, else $AOTC_CACHE_DIR, else cache/ of a source checkout, else ~/.cache/aotc
"""


def color_enabled(stream) -> bool:
    """Colour only for a terminal, and never when NO_COLOR is set (no-color.org) or TERM=dumb."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return hasattr(stream, "isatty") and stream.isatty()


_COLORS = {"red": "31", "green": "32", "yellow": "33", "dim": "2", "bold": "1"}


def paint(text: str, color: str, stream=None) -> str:
    return f"\033[{_COLORS[color]}m{text}\033[0m" if color_enabled(stream or sys.stdout) else text


def _emit(args, payload: dict, text: str) -> None:
    if args.json:
        print(json.dumps(payload, indent=2, sort_keys=True, default=str))
    elif text:
        print(text)


def _cache(args):
    from aotc.cache import Cache, default_cache_dir

    return Cache(Path(args.cache_dir) if args.cache_dir else default_cache_dir())


def _load(args):
    from aotc.build.spec import filter_specs, load_specs

    missing = [p for p in args.specs if not Path(p).exists()]
    if missing:  # a usage error (exit 2), not a spec that failed its checks
        raise AotcError([Diagnostic("AOTC-CLI-006", f"no such spec file or folder: {p}",
                                    fix="give an existing .toml file or folder, or no path for the catalog")
                         for p in missing])
    loaded = load_specs([Path(p) for p in args.specs] or None)
    return filter_specs(loaded.specs, getattr(args, "filter", None) or []), loaded.diagnostics


def _print_diags(diags: list[Diagnostic]) -> None:
    for d in diags:
        text = d.format()
        print(text.replace(d.code, paint(d.code, "red", sys.stderr), 1), file=sys.stderr)


# ---- check ---------------------------------------------------------------------------------------
def cmd_check(args) -> int:
    from aotc.build.rules import check

    archs = parse_arch_list(args.arch)
    specs, load_diags = _load(args)
    verdicts = [check(s, a) for s in specs for a in archs]
    rejected = [v for v in verdicts if v.applicable and not v.ok]
    lines = []
    for v in verdicts:
        if not v.applicable:
            lines.append(f"{paint('skip', 'dim')}  {v.spec.name:<48} {v.arch.name:<7} {v.diagnostics[0].message}")
        elif v.ok:
            smem = f"smem {v.smem.total:>7,} / {v.arch.smem_optin_bytes:,} B" if v.smem else ""
            chosen = " ".join(f"{k}={val}" for k, val in v.smem.chosen) if v.smem else ""
            lines.append(f"{paint('ok', 'green')}    {v.spec.name:<48} {v.arch.name:<7} {smem} {chosen}".rstrip())
        else:
            lines.append(f"{paint('FAIL', 'red')}  {v.spec.name:<48} {v.arch.name:<7}")
            lines.extend("      " + d.format().replace("\n", "\n      ") for d in v.diagnostics)
    lines.extend(d.format() for d in load_diags)
    n_ok = sum(v.ok for v in verdicts)
    lines.append(f"{n_ok} ok, {len(rejected)} rejected, {len(verdicts) - n_ok - len(rejected)} not applicable, "
                 f"{len(load_diags)} spec errors")
    _emit(args, {"ok": not rejected and not load_diags, "verdicts": [v.to_json() for v in verdicts],
                 "spec_errors": [d.to_json() for d in load_diags]}, "\n".join(lines))
    return 1 if rejected or load_diags else 0


# ---- build ---------------------------------------------------------------------------------------
def cmd_build_flashinfer(args) -> int:
    from aotc.build.flashinfer.module_build import build_modules, format_summary

    cache = _cache(args)
    archs = [a.name for a in parse_arch_list(args.arch)]
    summary = build_modules(args.flashinfer, archs, cache, jobs=args.jobs, force=args.force,
                            progress=not args.quiet, executor=_executor(args, cache, []))
    _emit(args, summary.to_json(), format_summary(summary, cache))
    return 0 if summary.ok else 1


def _executor(args, cache, specs):
    """None (the local pool) or a RayExecutor for `--executor ray...` (aotc/build/executor_ray.py)."""
    if args.executor == "local":
        return None
    from aotc.build.executor_ray import RayExecutor, parse_executor
    from aotc.build.toolchain import find_toolchain

    address = parse_executor(args.executor)
    return RayExecutor(address, cache, find_toolchain().identity, {s.name: s.family for s in specs})


def cmd_build(args) -> int:
    from aotc.build.pipeline import FAILED, build

    if args.flashinfer is not None:
        return cmd_build_flashinfer(args)
    archs = parse_arch_list(args.arch)
    specs, load_diags = _load(args)
    _print_diags(load_diags)
    if not specs:
        raise AotcError(Diagnostic("AOTC-CLI-009", f"no kernel specs matched --filter {' '.join(args.filter or [])}",
                                   fix="see the names with `aotc check`; a filter is a substring, a family name "
                                   "or a shell wildcard"))
    cache = _cache(args)
    if args.dry_run:
        return _dry_run(args, specs, archs, cache)
    summary = build(specs, archs, cache, jobs=args.jobs, force=args.force, progress=not args.quiet,
                    executor=_executor(args, cache, specs))
    failed = [r for r in summary.results if r.status == FAILED]
    lines = [(f"built {summary.count('built')}, cache hits {summary.count('hit')}, failed {len(failed)}, "
              f"skipped {summary.count('skipped')} (not applicable to the arch) in {summary.seconds:.2f}s "
              f"with {summary.jobs} jobs; cache: {cache.root}")]
    for r in failed:
        lines.append(f"FAILED {r.spec.name} ({r.arch.name})" + (f": log {r.log_path}" if r.log_path else ""))
        lines.extend("  " + d.format().replace("\n", "\n  ") for d in r.diagnostics)
    evicted = _after_build(args, cache, summary)
    if evicted is not None and evicted.evicted:
        from aotc.cache.evict import human_bytes

        lines.append(f"cache over its {human_bytes(evicted.max_bytes)} cap: evicted {len(evicted.evicted)} "
                     f"least-recently-used entries, {human_bytes(evicted.stored_before)} -> "
                     f"{human_bytes(evicted.stored_after)}")
    elif evicted is not None and evicted.stored_after > evicted.max_bytes:
        lines.append(f"cache holds {evicted.stored_after:,} B, over its {evicted.max_bytes:,} B cap, all of it used by "
                     "this build: raise --max-size / AOTC_CACHE_MAXSIZE")
    payload = {**summary.to_json(), "spec_errors": [d.to_json() for d in load_diags],
               "eviction": evicted.to_json() if evicted is not None else None}
    _emit(args, payload, "\n".join(lines))
    return 1 if failed or load_diags else 0


def _dry_run(args, specs, archs, cache) -> int:
    """Hits, misses and an estimated time, without compiling: before a multi-hour build."""
    from aotc.build.estimate import estimate, format_seconds
    from aotc.build.toolchain import CUTLASS_TU_PEAK_RSS_BYTES, plan_parallel_jobs

    jobs = plan_parallel_jobs(args.jobs, CUTLASS_TU_PEAK_RSS_BYTES).jobs
    est = estimate(specs, archs, cache, jobs)
    n = len(est.hits) + len(est.misses)
    lines = [(f"dry run for {', '.join(a.name for a in archs)}: {n} kernels, {len(est.hits)} in the cache, "
              f"{len(est.misses)} to compile ({est.skipped} not applicable or rejected); nothing is compiled")]
    if est.misses and len(est.unknown) == len(est.misses):
        lines.append(f"no compile times on record in {cache.root} for these families yet: no estimate")
    elif est.misses:
        unknown = f", plus {len(est.unknown)} kernels with no compile time on record" if est.unknown else ""
        lines.append(f"estimated {format_seconds(est.wall_seconds)} wall with {jobs} job(s), longest first "
                     f"({format_seconds(est.compile_seconds)} of nvcc{unknown}), from the median compile time per "
                     f"family recorded in {cache.root}:")
        per_family: dict[str, list] = {}
        for _, fam, secs in est.misses:
            per_family.setdefault(fam, []).append(secs)
        for fam, secs in sorted(per_family.items()):
            known = f"x {secs[0]:.0f} s" if secs[0] is not None else "no compile recorded yet: not in the estimate"
            lines.append(f"  {fam:<32} {len(secs):>3} to compile {known}")
    _emit(args, {"dry_run": True, **est.to_json()}, "\n".join(lines))
    return 0


def _after_build(args, cache, summary):
    """Count the build's hits and misses, mark what it used, then hold the size cap (never evicting
    what this build used). Returns the eviction report when a cap is set."""
    from aotc.cache import usage
    from aotc.cache.evict import evict_to_size, max_size_from

    cap = max_size_from(args.max_size)
    used = {r.key for r in summary.results if r.key and r.status in ("hit", "built")}
    usage.record_build(cache, hits=summary.count("hit"), misses=summary.count("built") + summary.count("failed"),
                       used_keys=used)
    return evict_to_size(cache, cap, used) if cap is not None else None


def cmd_stats(args) -> int:
    from aotc.cache import usage
    from aotc.cache.evict import human_bytes, max_size_from
    from aotc.cache.maintenance import stats

    cache = _cache(args)
    if args.zero:
        usage.zero(cache)
    st, counts, cap = stats(cache), usage.read_stats(cache), max_size_from(args.max_size)
    lookups = counts["hits"] + counts["misses"]
    rate = f"{counts['hits'] / lookups:.1%}" if lookups else "-"
    data = {**st.to_json(), **counts, "hit_rate": counts["hits"] / lookups if lookups else None,
            "max_bytes": cap, "root": str(cache.root)}
    lines = [f"cache directory   {cache.root}",
             f"entries           {st.entries} ({st.refs} refs, {st.blobs} blobs)",
             (f"stored            {human_bytes(st.stored_bytes)} ({st.stored_bytes:,} B zstd; raw "
              f"{human_bytes(st.raw_bytes)}, {st.compression_ratio:.2f}x)"),
             f"max size          {human_bytes(cap) if cap else 'none (--max-size or AOTC_CACHE_MAXSIZE)'}",
             f"since             {counts['since'] or 'the first build'} ({counts['builds']} builds)",
             f"hits              {counts['hits']}",
             f"misses            {counts['misses']} (compiled, or tried to)",
             f"hit rate          {rate}",
             f"evicted           {counts['evicted_entries']} entries, {human_bytes(counts['evicted_bytes'])}"]
    _emit(args, data, "\n".join(lines))
    return 0


# ---- cache views ---------------------------------------------------------------------------------
def _find_manifest(cache, what: str):
    """A manifest by action key (or unique prefix), spec key, or kernel name."""
    entries = list(cache.entries())
    matches = [m for m in entries if m["key"].startswith(what) or m.get("spec_key", "").startswith(what)
               or m.get("name") == what]
    if len(matches) > 1 and not all(m.get("name") == what for m in matches):
        raise AotcError(Diagnostic("AOTC-CLI-002", f"{what!r} matches {len(matches)} entries",
                                   fix="give more characters of the key"))
    if not matches:
        raise AotcError(Diagnostic("AOTC-CLI-001", f"no cache entry matches {what!r}",
                                   fix="list entries with `aotc ls`"))
    return matches


def cmd_ls(args) -> int:
    cache = _cache(args)
    entries = sorted(cache.entries(), key=lambda m: (m.get("name", ""), m.get("arch", "")))
    if args.family:
        entries = [m for m in entries if m.get("family") == args.family]
    lines = [f"{'key':<14} {'arch':<7} {'regs':>4} {'smem B':>8} {'compile':>8}  name"]
    for m in entries:
        res = m.get("resources") or {}
        smem = (m.get("smem_model") or {}).get("total", res.get("smem_dynamic", 0))
        kernels = [k for c in m.get("cubins", []) for k in c.get("kernels", {}).values()]
        if kernels:  # a FlashInfer module: its largest kernel
            res = {"registers": max(k.get("registers", 0) for k in kernels)}
            smem = max(k.get("smem_static", 0) + k.get("smem_dynamic", 0) for k in kernels)
        lines.append(f"{m['key'][:12]:<14} {m['arch']:<7} {res.get('registers', '?'):>4} {smem:>8,} "
                     f"{m.get('compile_seconds', 0):>7.1f}s  {m.get('name')}")
    lines.append(f"{len(entries)} entries in {cache.root}")
    _emit(args, {"root": str(cache.root), "entries": entries}, "\n".join(lines))
    return 0


def _describe_manifest(m: dict) -> list[str]:
    """A manifest for people: what it is, its SMEM bar, resources, SASS, provenance, where the bytes are."""
    from aotc.build.report import terminal_bar

    res = m.get("resources") or {}
    lines = [paint(f"{m.get('name')}  ({m.get('family')}, {m.get('arch')})", "bold"),
             f"  key        {m['key']}", f"  spec key   {m.get('spec_key', '?')}",
             "  params     " + ", ".join(f"{k}={v}" for k, v in sorted((m.get("params") or {}).items()))]
    smem = m.get("smem_model") or {}
    if smem.get("components"):
        budget = ARCHES[m["arch"]].smem_optin_bytes if m.get("arch") in ARCHES else smem["total"]
        lines.append("  shared memory (SMEM model; verified against the cubin):")
        lines += ["    " + ln for ln in terminal_bar(smem["components"], smem["total"], budget)]
    if res:
        lines.append(f"  resources  {res.get('registers', '?')} registers, {res.get('spills_bytes', 0)} B spills, "
                     f"{res.get('stack_bytes', 0)} B stack, SMEM static {res.get('smem_static', 0):,} B + "
                     f"dynamic {res.get('smem_dynamic', 0):,} B")
    kernels = [k for c in m.get("cubins", []) for k in c.get("kernels", {}).values()]
    if kernels:  # a FlashInfer module
        lines.append(f"  cubins     {len(m.get('cubins', []))} with {len(kernels)} kernels")
    mma = (m.get("sass") or {}).get("mma") or {}
    if mma:
        lines.append("  SASS MMA   " + ", ".join(f"{op} x{n}" for op, n in sorted(mma.items())))
    tc = m.get("toolchain") or {}
    lines.append(f"  built      {m.get('built_at', '?')} in {m.get('compile_seconds', 0):.1f} s of nvcc "
                 f"{tc.get('nvcc_version', '?')}, CUTLASS {m.get('cutlass_version', '-')}")
    lines.append("  blobs      " + ", ".join(f"{k} {v['size']:,} B" for k, v in sorted(m.get("blobs", {}).items())))
    return lines


def cmd_show(args) -> int:
    matches = _find_manifest(_cache(args), args.key)
    text = "\n\n".join("\n".join(_describe_manifest(m)) for m in matches)
    _emit(args, {"entries": matches}, text + "\n(the whole manifest: aotc show KEY --json)")
    return 0


def cmd_report(args) -> int:
    from aotc.build.report import write_report

    archs = parse_arch_list(args.arch)
    specs, load_diags = _load(args)
    _print_diags(load_diags)
    page, rows, timeline = write_report(specs, archs, _cache(args), Path(args.out))
    data = {"page": str(page), "kernels": len(rows), "rejected": sum(not r.ok for r in rows),
            "built": sum(bool(r.built) for r in rows), "timeline": len(timeline)}
    _emit(args, data, f"{page}: {data['kernels']} kernels ({data['rejected']} rejected, {data['built']} built), "
          f"self-contained; open it in a browser")
    return 1 if load_diags else 0


def cmd_verify(args) -> int:
    from aotc.cache.maintenance import verify

    report = verify(_cache(args))
    lines = [f"checked {report.blobs_checked} blobs, {report.manifests_checked} manifests"
             + (" (read-only cache: nothing moved)" if report.read_only else "")
             + (f"; moved the header map of {report.manifests_migrated} to a blob" if report.manifests_migrated else "")]
    lines += [f"corrupt blob {b['digest']}: {b['file']}" for b in report.corrupt_blobs]
    lines += [f"bad file {b['file']}: {b['problem']}" for b in report.bad_files]
    lines += [f"broken entry {b['name'] or b['key']}: {b['problems']}" for b in report.broken_entries]
    lines += [f"ref {'to drop' if report.read_only else 'dropped'} {r}" for r in report.refs_dropped]
    lines.append("ok" if report.ok else "problems found: run `aotc build` to rebuild what was dropped")
    _emit(args, report.to_json(), "\n".join(lines))
    return 0 if report.ok else 1


def cmd_gc(args) -> int:
    from aotc.build.flashinfer import workspaces
    from aotc.build.rules import check
    from aotc.cache.maintenance import gc
    from aotc.keys import spec_key

    keep = None
    if args.unreachable:  # explicit only: user spec files and FlashInfer modules are outside the catalog
        specs, _ = _load(args)
        keep = {spec_key(s.family, s.params, a.name) for s in specs for a in ARCHES.values() if check(s, a).ok}
    older = args.max_age_days * 86400 if args.max_age_days is not None else None
    cache = _cache(args)
    report = gc(cache, keep_spec_keys=keep, older_than_seconds=older, dry_run=args.dry_run,
                sweeps=[workspaces.sweeper(cache)])
    verb = "would remove" if args.dry_run else "removed"
    lines = [f"{verb} {e['name'] or e['key'][:12]} ({e['arch']}) {e['bytes']:,} B" for e in report.entries_removed]
    lines.append(f"{verb} {len(report.entries_removed)} entries, {len(report.refs_removed)} refs, "
                 f"{len(report.blobs_removed)} blobs ({report.bytes_freed:,} B stored), "
                 f"{len(report.tmp_removed)} leftovers")
    if args.dry_run and (report.entries_removed or report.blobs_removed):
        lines.append("nothing was removed: run the same command without --dry-run to remove these")
    elif report.entries_removed:
        lines.append("`aotc stats` shows what the cache holds now; `aotc build` rebuilds what is needed again")
    _emit(args, report.to_json(), "\n".join(lines))
    return 0


def cmd_explain(args) -> int:
    from aotc.build.direct_mode import lookup_prekey
    from aotc.build.pipeline import Builder
    from aotc.build.rules import check
    from aotc.cache import CacheFormatError, header_map
    from aotc.keys import spec_key

    specs, _ = _load(args)
    matches = [s for s in specs if s.name == args.name] or [s for s in specs if args.name in s.name]
    if len(matches) != 1:
        names = ", ".join(s.name for s in matches[:10]) or "none"
        raise AotcError(Diagnostic("AOTC-CLI-003", f"{args.name!r} matches {len(matches)} specs ({names})",
                                   fix="give the full kernel name as `aotc check` prints it"))
    spec, arch = matches[0], parse_arch_list(args.arch)[0]
    cache = _cache(args)
    verdict = check(spec, arch)
    builder = Builder(cache)
    source, flags, pk = builder.plan(spec, arch)
    key = lookup_prekey(cache, pk, builder.hash_file)
    manifest = cache.get_manifest(key) if key else None
    try:
        inputs = header_map.inputs(manifest, cache.read_blob) if manifest else None  # what the key hashes
    except KeyError as e:
        raise CacheFormatError(cache.manifest_path(key), "manifest", f"its header-map blob {e} is missing") from None
    data = {"spec": spec.to_json(), "arch": arch.name, "verdict": verdict.to_json(),
            "spec_key": spec_key(spec.family, spec.params, arch.name), "prekey": pk,
            "template": source.template, "source_lines": source.text.count("\n"),
            "toolchain": {"identity": builder.toolchain.identity, "nvcc": str(builder.toolchain.nvcc),
                          "source": builder.toolchain.source, "version": builder.toolchain.release},
            "flags": flags, "action_key": key, "cached": manifest is not None,
            "inputs": inputs}
    text = [f"{spec.name} for {arch.name}", f"  spec key   {data['spec_key']}", f"  prekey     {pk}",
            f"  template   {source.template}", f"  toolchain  nvcc {builder.toolchain.release} ({builder.toolchain.source}: {builder.toolchain.nvcc})",
            f"  flags      {' '.join(flags)}"]
    if manifest:
        headers = inputs["headers"]
        text += [f"  action key {key} (cached)", f"  headers    {len(headers)} files, e.g.:"]
        text += [f"    {h} {d[:12]}" for h, d in list(headers.items())[:8]]
    else:
        text.append("  action key unknown until compiled: no stored header set matches (it would rebuild)")
    _emit(args, data, "\n".join(text))
    return 0


def _require_wheel_file(path: Path) -> None:
    import zipfile

    if not path.is_file():
        raise AotcError(Diagnostic("AOTC-CLI-007", f"no such wheel file: {path}",
                                   fix="give the path of a .whl made by `aotc wheel` (see dist/)"))
    if not zipfile.is_zipfile(path):
        raise AotcError(Diagnostic("AOTC-CLI-007", f"{path} is not a wheel: not a zip archive "
                                   f"({path.stat().st_size:,} B)", fix="give a .whl made by `aotc wheel`; "
                                   "a partial download or a renamed file is not one"))


def cmd_wheel(args) -> int:
    from aotc.build.wheel_check import check_wheel
    from aotc.build.wheel_pack import build_wheel, select_entries

    if args.check:
        arch = parse_arch_list(args.arch)[0] if args.arch else None
        _require_wheel_file(Path(args.check))
        report = check_wheel(Path(args.check), arch)
        m = report.meta
        lines = [(f"{report.path}: {m.get('name')} {m.get('version')}, aotc {m.get('aotc_version')} "
                  f"ABI {m.get('abi')}, targets {', '.join(m.get('targets', []))}, "
                  f"toolchains {', '.join(m.get('toolchains', []))}")]
        for k in report.kernels:
            size = sum(k["sizes"].values())
            flag = "" if k["runs_on_arch"] in (None, True) else f"  CANNOT RUN ON {arch.name}"
            lines.append(f"  {k['elf_target']:<7} {size:>10,} B  {k['name']}{flag}")
        lines.extend(d.format() for d in report.diagnostics)
        lines.append("ok" if report.ok else f"{len(report.diagnostics)} problem(s)")
        _emit(args, report.to_json(), "\n".join(lines))
        return 0 if report.ok else 1
    archs = parse_arch_list(args.arch or "sm120a")
    cache = _cache(args)
    groups: list[tuple[str, list]] = []
    if args.layout in ("per-arch", "both") and (len(archs) > 1 or args.layout == "per-arch"):
        groups += [(f"{args.name}-{a.name}", [a]) for a in archs]
    if args.layout in ("combined", "both"):
        groups.append((args.name if len(archs) > 1 else f"{args.name}-{archs[0].name}", archs))
    made = []
    for dist_name, group_archs in groups:
        entries = select_entries(cache, group_archs, args.filter)
        path = build_wheel(cache, entries, dist_name, Path(args.out), machine=args.machine, sources=args.with_sources,
                           **({"version": args.wheel_version} if args.wheel_version else {}))
        made.append({"wheel": str(path), "kernels": len(entries), "bytes": path.stat().st_size,
                     "archs": [a.name for a in group_archs]})
    _emit(args, {"wheels": made}, "\n".join(f"{w['wheel']}: {w['kernels']} kernels, {w['bytes']:,} B" for w in made))
    return 0


def cmd_tune(args) -> int:
    from aotc.runtime.errors import NO_DEVICE
    from aotc.tune import BAD_SHAPES, NO_TORCH, NOT_TUNABLE, run_tune, summary_text

    families = [f for value in args.family or [] for f in value.split(",") if f]
    try:
        result = run_tune(_cache(args), families, Path(args.shapes) if args.shapes else None, args.device)
    except AotcError as e:  # bad input or an environment without a GPU or torch: exit status 2
        if not any(d.code in (BAD_SHAPES, NOT_TUNABLE, NO_TORCH, NO_DEVICE) for d in e.diagnostics):
            raise
        _print_diags(e.diagnostics)
        return 2
    _emit(args, result, summary_text(result))
    return 0


def cmd_doctor(args) -> int:
    from aotc.build.toolchain import doctor

    data = doctor()
    lines, errors = [], []
    for section, value in data.items():
        lines.append(f"{section}:")
        if isinstance(value, dict) and "error" in value:  # a coded diagnostic, not a dict dump
            errors += [Diagnostic(**e) for e in value["error"]]
            lines += [f"  {paint('ERROR', 'red')} {e['code']}: {e['message']}" for e in value["error"]]
            continue
        items = value.items() if isinstance(value, dict) else [("", value)]
        lines.extend(f"  {k:<20} {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in items)
    _emit(args, data, "\n".join(lines))
    _print_diags(errors)
    return 2 if errors else 0  # 2: the environment cannot build


def cmd_families(args) -> int:
    from aotc.families import all_families

    fams = all_families()
    if args.name:
        if args.name not in fams:
            raise AotcError(Diagnostic("AOTC-CLI-005", f"unknown family {args.name!r}"
                                       f"{did_you_mean(args.name, fams)}", fix=f"use one of: {', '.join(fams)}"))
        fams = {args.name: fams[args.name]}
    data, lines = {}, []
    for name, fam in fams.items():
        fields = {k: {"kind": getattr(f.kind, "__name__", f.kind), "doc": f.doc,
                      "default": None if f.required else f.default, "choices": f.choices}
                  for k, f in fam.fields.items()}
        data[name] = {"doc": fam.doc, "fields": fields}
        lines.append(f"{name}: {fam.doc}")
        for k, f in fields.items():
            extra = f" one of {list(f['choices'])}" if f["choices"] else ""
            default = "required" if f["default"] is None and fam.fields[k].required else f"default {f['default']!r}"
            lines.append(f"  {k:<14} {f['kind']:<6} {default}{extra}: {f['doc']}")
    _emit(args, data, "\n".join(lines))
    return 0


def _global_options(p: argparse.ArgumentParser, after_verb: bool) -> None:
    """Options every verb takes, accepted before or after it (`aotc --json ls` = `aotc ls --json`).
    After the verb their default is SUPPRESS, so an option given before the verb is not reset."""
    def default(value):
        return argparse.SUPPRESS if after_verb else value

    p.add_argument("--json", action="store_true", default=default(False), help="machine-readable output on stdout")
    p.add_argument("--cache-dir", default=default(None),
                   help="cache root (default: $AOTC_CACHE_DIR, checkout cache/, ~/.cache/aotc)")
    p.add_argument("-v", "--verbose", action="store_true", default=default(False),
                   help="print every nvcc command line as it starts (stderr)")


def version_text() -> str:
    """aotc, launch ABI, toolchain and CUTLASS in a few lines; what is missing is said, not raised."""
    from aotc import ABI_VERSION, __version__

    lines = [f"aotc {__version__} (launch ABI {ABI_VERSION}), Python {sys.version.split()[0]}"]
    try:
        from aotc.build.toolchain import cutlass_version, find_toolchain
    except ImportError as exc:  # a serving-only install without the build extra
        return "\n".join([*lines, f"build side not installed ({exc.name} missing): pip install 'aotc[build]'"])
    try:
        tc = find_toolchain()
        lines.append(f"toolchain: nvcc {tc.release} ({tc.source}: {tc.nvcc})")
    except AotcError as exc:
        lines.append(f"toolchain: none ({exc.diagnostics[0].code}; see `aotc doctor`)")
    try:
        lines.append(f"CUTLASS: {cutlass_version()}")
    except AotcError as exc:
        lines.append(f"CUTLASS: none ({exc.diagnostics[0].code}; see `aotc doctor`)")
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    """--version computed when asked (finding the toolchain runs nvcc), not when the parser is built."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=kwargs.get("help"))

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit(0)


def parser() -> argparse.ArgumentParser:
    from aotc.flashinfer.presets import DEFAULT_PRESETS as DEFAULT_FLASHINFER_PRESETS
    from aotc.flashinfer.presets import available_presets

    top = argparse.ArgumentParser(prog="aotc", description="Ahead-of-time kernel compiler and cubin cache for "
                                  "SM120/SM121 GPUs: tile specs are checked against the 99 KB SMEM budget and the "
                                  "tcgen05 ban, rendered from CUTLASS/CuTe templates, compiled, verified and cached.",
                                  epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--version", action=_VersionAction, help="print aotc's version, launch ABI, toolchain and "
                     "CUTLASS, then exit")
    _global_options(top, after_verb=False)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    archs = ", ".join(ARCHES)

    def add(name, fn, help_, specs=False, arch=None):
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(fn=fn)
        _global_options(p, after_verb=True)
        if specs:
            p.add_argument("specs", nargs="*", help="spec files or folders (default: the embedded catalog)")
            p.add_argument("--filter", action="append", help="keep kernels whose name contains (or family equals) "
                           "this; shell wildcards allowed; repeatable")
        if arch:
            p.add_argument("--arch", default=arch, help=f"comma-separated targets (default {arch}); known: {archs}")
        return p

    add("check", cmd_check, "validate tile specs against the arch rules (no GPU, no compiler)", True, "sm120a")
    b = add("build", cmd_build, "render, compile, verify and cache every matching kernel", True, "sm120a")
    b.add_argument("-j", "--jobs", type=int, help="parallel compiles (default: capped by cores and free memory)")
    b.add_argument("--force", action="store_true", help="compile even when the cache holds the result")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    b.add_argument("--executor", default="local", metavar="local|ray[://ADDRESS]",
                   help="where translation units compile: `local` (default), `ray` (RAY_ADDRESS or a local "
                   "Ray), `ray://HOST:10001` (Ray Client) or `ray:HOST:PORT` (a cluster's GCS); one task per "
                   "TU (with --flashinfer: per ninja compile step), declaring its recorded peak memory "
                   "(docs/build.md)")
    b.add_argument("--flashinfer", nargs="*", metavar="PRESET", default=None,
                   help="build FlashInfer's own modules of these presets (flashinfer_presets/*.toml or a .toml "
                   f"path; none given: {' '.join(DEFAULT_FLASHINFER_PRESETS)}; known: "
                   f"{', '.join(available_presets()) or 'none'}) instead of aotc's catalog; needs flashinfer-python. "
                   "An interrupted build resumes when run again; see docs/flashinfer.md")
    b.add_argument("--dry-run", action="store_true", help="print what the cache holds, what would compile and an "
                   "estimated time (recorded compile times per family), then stop")
    b.add_argument("--max-size", metavar="SIZE", help="after the build, evict least-recently-used entries until "
                   "the cache's blobs fit SIZE (e.g. 20G, 512MiB; default $AOTC_CACHE_MAXSIZE, none); never what this "
                   "build used")
    st = add("stats", cmd_stats, "entries, bytes stored and raw, compression, hits and misses since --zero, evictions")
    st.add_argument("--zero", action="store_true", help="reset the hit/miss/eviction counters first")
    st.add_argument("--max-size", metavar="SIZE", help="show this cap (default $AOTC_CACHE_MAXSIZE)")
    ls = add("ls", cmd_ls, "list cache entries")
    ls.add_argument("--family", help="only this family")
    rp = add("report", cmd_report, "write an HTML page: every kernel's SMEM against the budget, registers, "
             "spills, MMA counts and the build timeline (self-contained, no network)", True, "sm120a")
    rp.add_argument("--out", default="aotc-report", help="folder for index.html (default aotc-report/)")
    show = add("show", cmd_show, "describe an entry: SMEM bar, resources, SASS, provenance (--json: manifest)")
    show.add_argument("key", help="action key (or a unique prefix), spec key, or kernel name")
    add("verify", cmd_verify, "re-hash every stored blob; quarantine corrupt ones and drop their refs")
    gc = add("gc", cmd_gc, "drop blobs no entry uses and leftovers of dead builds; entries only by age or, "
             "with --unreachable, outside the given specs", True)
    gc.add_argument("--max-age-days", type=float, help="also drop entries built longer ago than this")
    gc.add_argument("--unreachable", action="store_true", help="also drop every entry the spec files (default: "
                    "the catalog) do not reach, including your own specs' kernels and FlashInfer modules")
    gc.add_argument("--dry-run", action="store_true", help="report what would go, delete nothing")
    ex = add("explain", cmd_explain, "show the content key of a spec and every input that goes into it",
             arch="sm120a")
    ex.add_argument("name", help="kernel name as `aotc check` prints it")
    ex.add_argument("--spec", dest="specs", action="append", default=[], help="spec file (default: the catalog)")
    wh = add("wheel", cmd_wheel, "pack cached kernels into installable wheels, or check a wheel")
    wh.add_argument("--arch", help="comma-separated targets to pack (default sm120a); with --check: the arch to "
                    "check the wheel against")
    wh.add_argument("--filter", action="append", help="only kernels whose name contains this (repeatable)")
    wh.add_argument("--name", default="aotc-kernels", help="distribution name (per-arch wheels get -ARCH appended)")
    wh.add_argument("--wheel-version", default=None, help="wheel version, e.g. 1.2.0 for an index that refuses "
                    "local versions (default: aotc's version + a local label from the newest build time and the "
                    "content digest, so a rebuilt wheel upgrades and an identical one keeps its version)")
    wh.add_argument("--out", default="dist", help="output folder (default dist/)")
    wh.add_argument("--layout", choices=("both", "combined", "per-arch"), default="both",
                    help="one wheel per arch, one combined wheel, or both (default)")
    wh.add_argument("--machine", choices=("x86_64", "aarch64"), default="x86_64", help="platform tag")
    wh.add_argument("--with-sources", action="store_true", help="also pack what only a build reads (each "
                    "kernel's source and header map; the runtime loads neither, so wheels leave them in the cache)")
    wh.add_argument("--check", metavar="WHEEL", help="list a wheel's kernels and flag what cannot run on --arch")
    tu = add("tune", cmd_tune, "time every stored tile of a family on this GPU over shape buckets and store the "
             "selection table the runtime then uses on this device (minutes; needs torch)")
    tu.add_argument("--family", action="append", help="family to tune (repeatable or comma-separated; default: "
                    "every family of the shapes)")
    tu.add_argument("--shapes", metavar="FILE", help="benchmark shapes, TOML ([[fmha_fwd]] tables) or JSON "
                    "(default: a built-in set per family; see docs/runtime.md)")
    tu.add_argument("--device", type=int, default=0, help="CUDA device ordinal (default 0)")
    add("doctor", cmd_doctor, "report the toolchain, CUTLASS, memory and GPU aotc would use")
    fam = add("families", cmd_families, "list kernel families and their spec parameters")
    fam.add_argument("name", nargs="?", help="one family")
    return top


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends a build like Ctrl-C: running compiles killed, cache whole


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.verbose:  # read by aotc.build.compile, also in worker processes
        os.environ["AOTC_VERBOSE"] = "1"
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.fn(args)
    except AotcError as e:
        _print_diags(e.diagnostics)
        return 2 if any(d.code.startswith(("AOTC-TOOL", "AOTC-CLI")) for d in e.diagnostics) else 1
    except UnknownArchError as e:
        print(f"AOTC-CLI-004: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the cache holds only whole entries", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`aotc ls --json | head`): stop quietly, as a tool killed by SIGPIPE would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141
    except OSError as e:  # a path that cannot be read or written (after BrokenPipeError, its subclass)
        where = f" {e.filename}" if e.filename else ""
        _print_diags([Diagnostic("AOTC-CLI-008", f"cannot read or write{where}: {e.strerror or e}",
                                 fix="check that the path exists and is writable (--out, --cache-dir, spec paths)")])
        return 1


if __name__ == "__main__":
    sys.exit(main())
