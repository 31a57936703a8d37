"""`aotc tune`: time every stored candidate tile of a family on the local GPU over shape buckets and
store the selection table the runtime reads (aotc.runtime.tuned; docs/runtime.md).

Candidates are what the runtime itself chooses among (lookup.stored_candidates over the cache and
installed kernel wheels); each shape is launched through the real typed entry point with each
candidate's params and timed with CUDA events (warm-up, then the median of repeated runs), in
interleaved rounds over the shape's candidates (measure: one timing of a candidate is not
reproducible enough when candidates are within a few percent of each other). A bucket's choice is the
tile with the least mean time relative to the fastest over its shapes; the heuristic's pick is kept
unless another is more than KEEP_HEURISTIC faster. Needs torch (tensors and events) and a GPU.
"""

from __future__ import annotations

import datetime
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aotc.diagnostics import AotcError, Diagnostic

BAD_SHAPES = "AOTC-TUNE-001"  # shapes file unreadable or invalid
NOT_TUNABLE = "AOTC-TUNE-002"  # a family aotc tune has no benchmark for
NO_TORCH = "AOTC-TUNE-003"  # torch (benchmark tensors, CUDA events) not importable
NOTHING_STORED = "AOTC-TUNE-004"  # no stored candidate of a requested family runs on this device
KEEP_HEURISTIC = 0.01  # the heuristic's pick stays unless another tile is over 1% faster
ROUNDS = 4  # interleaved rounds in which every candidate of a shape is timed once
CLOSE = 0.05  # after ROUNDS, candidates within 5% of the best are timed in RETIME_ROUNDS more rounds
RETIME_ROUNDS = 4
MAX_SHAPE_BYTES = 16 << 30  # tensors of one benchmark shape
REQUIRED = object()

# Per family: shape field -> (type, default). fmha_fwd's seqlen_k defaults to seqlen_q.
FIELDS: dict[str, dict[str, tuple[type, Any]]] = {
    "fmha_fwd": {"batch": (int, 1), "seqlen_q": (int, REQUIRED), "seqlen_k": (int, None), "q_heads": (int, 32),
                 "kv_heads": (int, 8), "head_dim": (int, 128), "dtype": (str, "bf16"), "causal": (bool, False)},
    "fmha_decode": {"batch": (int, REQUIRED), "seqlen_k": (int, REQUIRED), "q_heads": (int, 32),
                    "kv_heads": (int, 8), "head_dim": (int, 128), "dtype": (str, "bf16")},
    "grouped_gemm_sm80": {"groups": (int, REQUIRED), "m": (int, REQUIRED), "n": (int, REQUIRED),
                          "k": (int, REQUIRED), "dtype": (str, "bf16")},
}
DTYPES = ("bf16", "fp16")

# Default benchmark shapes: one per bucket (prefill lengths, decode batches, MoE tokens per expert).
_DEFAULT_SHAPES: dict[str, list[dict]] = {
    "fmha_fwd": [{"batch": b, "seqlen_q": s} for b, s in
                 ((1, 128), (16, 256), (1, 512), (4, 1024), (1, 2048), (2, 4096), (1, 8192))]
    + [{"batch": b, "seqlen_q": s, "head_dim": 64} for b, s in ((8, 512), (1, 4096))],
    "fmha_decode": [{"batch": b, "seqlen_k": s} for b, s in ((1, 4096), (8, 4096), (32, 2048), (128, 1024))],
    "grouped_gemm_sm80": [{"groups": 8, "m": m, "n": 4096, "k": 4096} for m in (16, 128, 512, 2048)]
    + [{"groups": 8, "m": 512, "n": 14336, "k": 4096}, {"groups": 64, "m": 32, "n": 2048, "k": 7168},
       {"groups": 64, "m": 256, "n": 2048, "k": 7168}],
}


def _bad(message: str, fix: str, where: str = "") -> AotcError:
    return AotcError(Diagnostic(BAD_SHAPES, message, file=where, fix=fix))


def check_families(families: list[str]) -> None:
    unknown = [f for f in families if f not in FIELDS]
    if unknown:
        from aotc.diagnostics import did_you_mean

        raise AotcError(Diagnostic(NOT_TUNABLE, f"aotc tune has no benchmark for {', '.join(unknown)}"
                                   f"{did_you_mean(unknown[0], FIELDS)}",
                                   fix=f"tune one of: {', '.join(FIELDS)}", details={"families": unknown}))


def complete_shape(family: str, shape: Any, where: str = "") -> dict:
    """A shape with its defaults filled in, checked; AOTC-TUNE-001 naming the field otherwise."""
    fields = FIELDS[family]
    if not isinstance(shape, dict):
        raise _bad(f"a {family} shape must be a table of fields, got {type(shape).__name__}",
                   f"write e.g. {json.dumps({k: 1 for k, (_, d) in fields.items() if d is REQUIRED})}", where)
    unknown = sorted(set(shape) - set(fields))
    if unknown:
        from aotc.diagnostics import did_you_mean

        raise _bad(f"{family} shape field {unknown[0]!r} is unknown{did_you_mean(unknown[0], fields)}",
                   f"use only {', '.join(fields)}", where)
    out = {}
    for name, (kind, default) in fields.items():
        value = shape.get(name, default)
        if value is REQUIRED:
            raise _bad(f"{family} shape {json.dumps(shape, sort_keys=True)} lacks {name!r}",
                       f"give {name} (required fields: {', '.join(k for k, (_, d) in fields.items() if d is REQUIRED)})",
                       where)
        if value is None:
            continue
        if type(value) is not kind:  # bool is no int here, and 1 is no bool
            raise _bad(f"{family} shape field {name} = {value!r} is not a{'n' if kind is int else ''} "
                       f"{kind.__name__}", f"give {name} as a{'n' if kind is int else ''} {kind.__name__}", where)
        if kind is int and not 1 <= value <= 1 << 24:
            raise _bad(f"{family} shape field {name} = {value} is out of range", f"give {name} in 1..{1 << 24}", where)
        out[name] = value
    if out["dtype"] not in DTYPES:
        raise _bad(f"{family} shape dtype {out['dtype']!r} is not one of {', '.join(DTYPES)}",
                   f"use dtype = {DTYPES[0]!r} or {DTYPES[1]!r}", where)
    if family.startswith("fmha"):
        out.setdefault("seqlen_k", out.get("seqlen_q", 1))
        if out["q_heads"] % out["kv_heads"]:
            raise _bad(f"{family} shape q_heads {out['q_heads']} is not a multiple of kv_heads {out['kv_heads']}",
                       "give kv_heads dividing q_heads (GQA)", where)
    elif out["k"] % 8 or out["n"] % 8:
        raise _bad(f"grouped_gemm_sm80 shape n = {out['n']}, k = {out['k']}: both must be multiples of 8 "
                   "(16-byte rows)", "round n and k up to a multiple of 8", where)
    if shape_bytes(family, out) > MAX_SHAPE_BYTES:
        raise _bad(f"{family} shape {json.dumps(out, sort_keys=True)} needs {shape_bytes(family, out) / 2**30:.1f} GiB "
                   f"of tensors, over the {MAX_SHAPE_BYTES >> 30} GiB aotc tune allows", "give a smaller shape", where)
    return out


def shape_bytes(family: str, s: dict) -> int:
    if family == "grouped_gemm_sm80":
        return 2 * s["groups"] * (s["m"] * s["k"] + s["n"] * s["k"] + s["m"] * s["n"])
    sq = s["seqlen_q"] if family == "fmha_fwd" else 1
    return 2 * s["batch"] * s["head_dim"] * (2 * sq * s["q_heads"] + 2 * s["seqlen_k"] * s["kv_heads"])


def load_shapes(path: Path) -> dict[str, list[dict]]:
    """family -> checked shapes from a TOML (`[[fmha_fwd]]` tables) or JSON (`{"fmha_fwd": [...]}`) file."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _bad(f"no such shapes file: {path}", "give an existing .toml or .json file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _bad(f"shapes file {path} is unreadable: {e}", "give a UTF-8 .toml or .json file") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise _bad(f"shapes file {path} does not parse: {e}", "fix the syntax (TOML: [[fmha_fwd]] tables; "
                   "JSON: {\"fmha_fwd\": [{...}]})") from None
    if not isinstance(data, dict) or not data:
        raise _bad(f"shapes file {path} holds no family", "give at least one family with a list of shapes", where)
    check_families(list(data))
    shapes = {}
    for family, items in data.items():
        if not isinstance(items, list) or not items:
            raise _bad(f"{family} in {path} is not a non-empty list of shapes", f"write [[{family}]] tables", where)
        shapes[family] = [complete_shape(family, s, where) for s in items]
    return shapes


# The built-in shapes as the tune uses them: every field filled in, as a shapes file's are.
DEFAULT_SHAPES: dict[str, list[dict]] = {f: [complete_shape(f, s) for s in v] for f, v in _DEFAULT_SHAPES.items()}


def choice_inputs(family: str, s: dict) -> tuple[dict, dict]:
    """(matches, problem) the typed entry point hands choose() for this shape: what buckets it."""
    from aotc.runtime.attention import fmha_problem
    from aotc.runtime.gemm import grouped_problem

    if family == "grouped_gemm_sm80":
        return {"dtype": s["dtype"]}, grouped_problem([(s["m"], s["n"], s["k"])] * s["groups"])
    sq = s["seqlen_q"] if family == "fmha_fwd" else 1
    return ({"head_dim": s["head_dim"], "dtype": s["dtype"]},
            fmha_problem(family, s["batch"], s["q_heads"], s["kv_heads"], sq))


def runner(family: str, s: dict, ordinal: int) -> Callable[[dict], Callable[[], Any]]:
    """params -> a no-argument launch of this shape through the typed entry point (tensors made once)."""
    import torch

    from aotc.runtime import attention, gemm

    dev = f"cuda:{ordinal}"
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[s["dtype"]]
    if family == "grouped_gemm_sm80":
        a = [torch.randn(s["m"], s["k"], device=dev, dtype=dt) for _ in range(s["groups"])]
        b = [torch.randn(s["n"], s["k"], device=dev, dtype=dt) for _ in range(s["groups"])]
        out = [torch.empty(s["m"], s["n"], device=dev, dtype=dt) for _ in range(s["groups"])]
        return lambda params: lambda: gemm.grouped_gemm(a, b, out, params=params)
    sq = s["seqlen_q"] if family == "fmha_fwd" else 1
    q = torch.randn(s["batch"], sq, s["q_heads"], s["head_dim"], device=dev, dtype=dt)
    k = torch.randn(s["batch"], s["seqlen_k"], s["kv_heads"], s["head_dim"], device=dev, dtype=dt)
    v, o = torch.randn_like(k), torch.empty_like(q)
    if family == "fmha_fwd":
        return lambda params: lambda: attention.fmha_fwd(q, k, v, o, causal=s["causal"], params=params)
    return lambda params: lambda: attention.fmha_decode(q, k, v, o, params=params)


def time_ms(fn: Callable[[], Any], warmup_ms: float = 25, rep: int = 20, calls: int = 1) -> float:
    """Median over `rep` CUDA-event pairs of the time per call of `calls` back-to-back calls, after
    `warmup_ms` of warm-up (calls > 1: the host's per-call cost overlaps the previous call's GPU work)."""
    import torch

    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    # each warm-up call waited for: a loop bounded by host time alone queues thousands of launches in
    # 25 ms (a graph replay costs microseconds to enqueue), i.e. seconds to minutes of GPU work per tile
    while (time.perf_counter() - t0) * 1e3 < warmup_ms:
        fn()
        torch.cuda.synchronize()
    times = []
    for _ in range(rep):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def gpu_ms(fn: Callable[[], Any], rep: int = 20, calls: int = 10) -> tuple[float, str]:
    """(GPU milliseconds per call, how it was timed): `calls` calls captured in one CUDA graph and
    replayed, so the entry point's host-side checks do not count (they are the same for every tile;
    a grouped GEMM of many groups spends longer in them than on the GPU); eager back-to-back calls
    if the capture fails."""
    import torch

    fn()  # loads the kernel and makes per-problem device arrays outside the capture
    torch.cuda.synchronize()
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
        return time_ms(graph.replay, rep=rep) / calls, "cuda graph"
    except (RuntimeError, AotcError) as e:
        torch.cuda.synchronize()
        return time_ms(fn, rep=rep, calls=calls), f"eager ({str(e).splitlines()[0][:120]})"


def round_order(keys: list[str], r: int) -> list[str]:
    """Round r's order: rotated by r // 2 and reversed on odd rounds (A B C, C B A, B C A, A C B, C A B,
    B A C, ...), so no candidate is always timed first or right after the same neighbour."""
    if not keys:
        return []
    shift = (r // 2) % len(keys)
    order = keys[shift:] + keys[:shift]
    return order[::-1] if r % 2 else order


def measure(launches: dict[str, Callable[[], Any]], timer: Callable[[Callable[[], Any]], tuple[float, str]],
            rounds: int = ROUNDS, close: float = CLOSE, retime: int = RETIME_ROUNDS,
            errors: tuple[type[BaseException], ...] = (AotcError,)) -> dict[str, Any]:
    """Time the candidates of one shape in `rounds` interleaved rounds (round_order), then the ones
    within `close` of the best mean in `retime` more rounds among themselves. A candidate's time is
    the mean of its rounds: the check a choice must pass times it once more, and a tile that is
    sometimes slow is as often slow there, which a median or minimum would hide. A candidate whose
    timer raises one of `errors` is failed and timed no more. Returns {"ms": key -> mean, "rounds":
    key -> [ms per round], "how": key -> how it was timed, "failed": key -> why}."""
    times: dict[str, list[float]] = {k: [] for k in launches}
    how: dict[str, str] = {}
    failed: dict[str, str] = {}
    done = 0

    def run(keys: list[str], n: int) -> None:
        nonlocal done
        for r in range(done, done + n):
            for k in round_order(keys, r):
                if k in failed:
                    continue
                try:
                    ms, how[k] = timer(launches[k])
                except errors as e:  # e.g. AOTC-RT-007: this tile cannot run this problem
                    failed[k] = e.diagnostics[0].format() if isinstance(e, AotcError) else f"{type(e).__name__}: {e}"
                    continue
                times[k].append(ms)
        done += n

    def means() -> dict[str, float]:
        return {k: statistics.fmean(v) for k, v in times.items() if v and k not in failed}

    run(list(launches), rounds)
    first = means()
    if first and retime > 0:
        best_ms = min(first.values())
        near = [k for k in launches if k in first and first[k] <= best_ms * (1 + close)]
        if len(near) > 1:
            run(near, retime)
    return {"ms": means(), "rounds": {k: v for k, v in times.items() if k not in failed},
            "how": {k: v for k, v in how.items() if k not in failed}, "failed": failed}


def label(found: Any) -> str:
    return f"{found.manifest.get('name', found.spec_key[:12])} ({found.arch})"


def pick(times: list[dict[str, float]], heuristic: str | None) -> str:
    """The spec key with the least mean time relative to each shape's fastest; the heuristic's
    pick when within KEEP_HEURISTIC of that. A tile that failed on a shape of the bucket scores inf."""
    keys = set().union(*times)
    score = {k: statistics.fmean(t.get(k, math.inf) / min(t.values()) for t in times) for k in keys}
    fastest = min(sorted(score), key=score.__getitem__)
    if heuristic in score and score[heuristic] <= score[fastest] * (1 + KEEP_HEURISTIC):
        return heuristic
    return fastest


def tune_family(family: str, shapes: list[dict], device: Any, progress: Callable[[str], None],
                timer: Callable[[Callable[[], Any]], tuple[float, str]] = gpu_ms) -> tuple[dict | None, list[dict]]:
    """(the table for `family` or None when nothing was timed, one row per shape)."""
    from aotc.diagnostics import AotcError as Error
    from aotc.runtime.lookup import stored_candidates
    from aotc.runtime.tile_select import best
    from aotc.runtime.tuned import SCHEMA, bucket, device_identity, table_key

    stored = stored_candidates(family, device)
    rows, by_bucket = [], {}
    for i, s in enumerate(shapes, 1):
        matches, problem = choice_inputs(family, s)
        group = [f for f in stored if all(f.params.get(k) == v for k, v in matches.items())]
        row = {"family": family, "shape": s, "bucket": bucket(matches, problem), "ms": {}, "failed": {}, "timing": {}}
        rows.append(row)
        if not group:
            row["skipped"] = f"no stored {family} kernel with {', '.join(f'{k}={v}' for k, v in matches.items())}"
            progress(f"tune {family} [{i}/{len(shapes)}] {_shape_text(s)}: skipped, {row['skipped']}")
            continue
        heuristic = best(group, problem, device.sm_count)
        row["heuristic"] = heuristic.spec_key
        make = runner(family, s, device.ordinal)
        got = measure({f.spec_key: make(f.params) for f in group}, timer, errors=(Error,))
        row.update(ms=got["ms"], rounds=got["rounds"], timing=got["how"], failed=got["failed"])
        for f in group:
            if f.spec_key in row["ms"]:
                ms = row["rounds"][f.spec_key]
                progress(f"tune {family} [{i}/{len(shapes)}] {_shape_text(s)}: {label(f)} "
                         f"{row['ms'][f.spec_key]:.4f} ms (mean of {len(ms)} rounds, {min(ms):.4f}-{max(ms):.4f})")
        if row["ms"]:
            by_bucket.setdefault(row["bucket"], []).append(row)
    names = {f.spec_key: label(f) for f in stored}
    for row in rows:
        row["names"] = {k: names[k] for k in (*row["ms"], *row["failed"])}
    if not by_bucket:
        return None, rows
    choices = {}
    for name, members in sorted(by_bucket.items()):
        choices[name] = pick([r["ms"] for r in members], members[0].get("heuristic"))
        for r in members:
            r["tuned"] = choices[name]
    identity = device_identity(device)
    kernels = sorted(f.spec_key for f in stored)
    table = {"schema": SCHEMA, "key": table_key(family, identity, kernels), "family": family, "device": identity,
             "kernels": kernels, "choices": choices, "names": {k: names[k] for k in kernels},
             "measured": [{k: r[k] for k in ("shape", "bucket", "ms", "heuristic", "tuned")} for r in rows
                          if "tuned" in r],
             "tuned_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    return table, rows


def _shape_text(s: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in s.items())


def run_tune(cache: Any, families: list[str] | None = None, shapes_path: Path | None = None, ordinal: int = 0,
             progress: Callable[[str], None] | None = None) -> dict:
    """Tune `families` (default: every family with shapes) on CUDA device `ordinal` and store one
    table per family in `cache`. Checks shapes first, then the device (AOTC-RT-001), then torch."""
    shapes = load_shapes(shapes_path) if shapes_path is not None else DEFAULT_SHAPES
    if families:
        check_families(families)
        missing = [f for f in families if f not in shapes]
        if missing:
            raise _bad(f"the shapes file has no shapes for {', '.join(missing)}",
                       f"add [[{missing[0]}]] shapes or leave out --family {missing[0]}", str(shapes_path))
    wanted = families or list(shapes)
    from aotc.runtime import ops
    from aotc.runtime.device import query_device
    from aotc.runtime.lookup import CacheSource, WheelSource, set_sources
    from aotc.runtime.registry import clear
    from aotc.runtime.tuned import forget, write_table

    device = query_device(ordinal)
    try:
        import torch
    except ImportError as e:
        raise AotcError(Diagnostic(NO_TORCH, f"aotc tune needs torch for its benchmark tensors: {e}",
                                   fix="pip install torch (a CUDA build)")) from None
    torch.zeros(1, device=f"cuda:{ordinal}")  # torch's primary context: the one aotc launches in
    set_sources([CacheSource(cache), WheelSource()])  # what the runtime reads with this cache as its own
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    tables, rows = [], []
    for family in wanted:
        table, family_rows = tune_family(family, shapes[family], device, say)
        rows += family_rows
        if table is None:
            if families:  # asked for by name: nothing to time is an error, with the build command
                raise AotcError(Diagnostic(NOTHING_STORED, f"no stored {family} kernel runs on {device.label} "
                                           "for the given shapes", fix=f"build them: aotc build --arch "
                                           f"{device.runnable_targets()[0]} --filter {family}"))
            continue
        path = write_table(cache, table)
        tables.append({"family": family, "key": table["key"], "path": str(path), "candidates": len(table["kernels"]),
                       "buckets": len(table["choices"])})
    clear()  # kernels loaded for timing; the next choice reads the new tables
    forget()
    ops._choices.clear()
    from aotc.runtime.tuned import device_identity

    return {"device": device_identity(device), "tables": tables, "shapes": [_row_summary(r) for r in rows]}


def _row_summary(r: dict) -> dict:
    out = {"family": r["family"], "shape": r["shape"], "bucket": r["bucket"]}
    if "skipped" in r:
        return {**out, "skipped": r["skipped"]}
    ms, names = r["ms"], r["names"]
    fastest = min(ms, key=ms.__getitem__) if ms else None
    for role, key in (("heuristic", r.get("heuristic")), ("tuned", r.get("tuned")), ("fastest", fastest)):
        out[role] = {"kernel": names.get(key, key), "ms": ms.get(key)} if key else None
    out["ms"] = {names[k]: v for k, v in ms.items()}
    out["rounds"] = {names[k]: v for k, v in r.get("rounds", {}).items()}
    out["failed"] = {names[k]: v for k, v in r["failed"].items()}
    out["timing"] = sorted(set(r["timing"].values()))
    return out


def _cell(pick: dict | None) -> str:
    if not pick:
        return "none"
    return f"{pick['kernel']} " + (f"{pick['ms']:.4f} ms" if pick["ms"] is not None else "(failed)")


def summary_text(result: dict) -> str:
    """Heuristic vs tuned vs fastest per shape, then where the tables went."""
    d = result["device"]
    lines = [(f"{d['name']} (compute capability {d['cc'][0]}.{d['cc'][1]}, driver CUDA {d['driver'] // 1000}."
              f"{d['driver'] % 1000 // 10})")]
    for r in result["shapes"]:
        head = f"{r['family']} {_shape_text(r['shape'])}"
        if "skipped" in r:
            lines.append(f"  {head}: skipped ({r['skipped']})")
            continue
        cells = [f"{role} {_cell(r[role])}" for role in ("heuristic", "tuned", "fastest")]
        h, t = r["heuristic"], r["tuned"]
        if h and t and h["ms"] and t["ms"]:
            cells[1] += f" ({h['ms'] / t['ms']:.2f}x the heuristic's speed)"
        lines.append(f"  {head}\n    " + " | ".join(cells))
        lines += [f"    failed: {name}: {why.splitlines()[0]}" for name, why in r["failed"].items()]
    for t in result["tables"]:
        lines.append(f"table {t['family']}: {t['buckets']} buckets over {t['candidates']} candidates -> {t['path']}")
    if not result["tables"]:
        lines.append("no table written: no stored candidate matched the shapes")
    return "\n".join(lines)
