"""Quantize proof: the sm_90a and sm_80 builds of quantize_blockscaled (software e2m1 rounding) run on
a GPU and are compared bit for bit with torchao's reference quantizers (prototype.mx_formats:
nvfp4_quantize + to_blocked, to_mx FLOOR), computed on CPU tensors.

  build (CPU machine):  python tools/device_quantize.py build CACHE_DIR
  run (GPU machine):    AOTC_CACHE_DIR=CACHE_DIR python3 tools/device_quantize.py run OUT_DIR
      quantizes every case with each build, saves inputs and outputs (OUT_DIR/quantize_run.npz, and
      the NVFP4 operands of a small GEMM for the CPU chain test), compares there too if torchao imports;
  report (here):        python tools/device_quantize.py report RUN_NPZ OUT.md
      compares with torchao on this machine's CPU and writes the results file.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FAMILY = "quantize_blockscaled"
ARCHS = ("sm90a",)  # an sm_80 cubin does not run on sm_90 (SASS is per major); it is compiled only
FORMATS = ("nvfp4", "mxfp8")
IN_DTYPES = ("bf16", "fp16")
CHAIN_SHAPE = (200, 136, 256)  # M, N, K of the NVFP4 GEMM whose operands the GPU quantizes


# ---- build (here) ---------------------------------------------------------------------------------
def build(cache_dir: str) -> int:
    from aotc.arch import get_arch
    from aotc.build.pipeline import Builder
    from aotc.build.spec import filter_specs, load_specs
    from aotc.cache import Cache

    builder = Builder(Cache(cache_dir))
    failed = 0
    for spec in filter_specs(load_specs().specs, ["quantize_"]):
        for arch in ARCHS:
            r = builder.safe_build_one(spec, get_arch(arch))
            print(f"{r.status:7} {spec.name} {arch} {r.seconds:.1f}s", *(d.format() for d in r.diagnostics))
            failed += r.status == "failed"
    return 1 if failed else 0


# ---- inputs (deterministic, numpy) ------------------------------------------------------------------
def cases(fmt: str) -> dict:
    """name -> float32 rows x cols array (exactly representable in bf16 and, where noted, fp16)."""
    import numpy as np

    vec = 16 if fmt == "nvfp4" else 32
    rng = np.random.default_rng(7 if fmt == "nvfp4" else 8)
    out = {}
    out["random"] = rng.standard_normal((300, 128 * vec)).astype(np.float32)
    blocks = rng.standard_normal((257, 40, vec)).astype(np.float32)
    blocks *= np.exp2(rng.integers(-60, 60, (257, 40, 1))).astype(np.float32)  # per-block magnitudes
    out["dynamic_range"] = blocks.reshape(257, 40 * vec)
    const = np.repeat(rng.standard_normal((130, 12, 1)).astype(np.float32), vec, axis=2)
    out["constant_blocks"] = const.reshape(130, 12 * vec)
    out["tiny"] = (rng.standard_normal((64, 8 * vec)) * 1e-38).astype(np.float32)  # bf16 subnormals too
    out["huge"] = (rng.standard_normal((64, 8 * vec)) * 1e37).astype(np.float32)
    special = rng.standard_normal((129, 10 * vec)).astype(np.float32)
    special[3, 5] = np.nan
    special[7, 2 * vec:3 * vec] = np.nan
    special[11, vec + 3] = np.inf
    special[17, 4 * vec + 1] = -np.inf
    special[23, 6 * vec:7 * vec] = np.inf
    out["nan_inf"] = special
    zeros = rng.standard_normal((140, 5 * vec)).astype(np.float32)  # 5 SF columns: padded to 8
    zeros[:, :vec] = 0.0
    zeros[5, vec:2 * vec] = -0.0
    zeros[130:, :] = 0.0
    out["zero_blocks_odd_sf_cols"] = zeros
    out["one_row"] = rng.standard_normal((1, vec)).astype(np.float32)
    return out


ONE_LEVEL = ("tiny", "one_row")  # NVFP4 cases quantized with global scale 1 (tiny: amax / 2688 is subnormal)


def global_scale_for(fmt: str, name: str, x) -> float:
    """The NVFP4 per-tensor scale a caller would pass: amax of the finite values / 2688 (as float32)."""
    import numpy as np
    import torch

    from aotc.runtime import quantize as rq

    finite = x.float()[torch.isfinite(x.float())]
    if fmt != "nvfp4" or name in ONE_LEVEL or not finite.numel() or float(finite.abs().max()) == 0:
        return 1.0
    return float(np.float32(rq.nvfp4_global_scale(float(finite.abs().max()))))


# ---- reference (torchao, CPU tensors) ---------------------------------------------------------------
def reference(fmt: str, x, global_scale: float):
    """(q bytes, sf bytes in the kernel's layout, sf bytes unswizzled [rows, cols/vec]) from torchao."""
    import torch
    from torchao.prototype.mx_formats.utils import to_blocked

    x = x.float() if x.dtype == torch.float16 else x  # torchao takes bf16 or fp32; fp16 -> fp32 is exact
    if fmt == "nvfp4":
        from torchao.prototype.mx_formats.nvfp4_tensor import nvfp4_quantize

        scales, q = nvfp4_quantize(x, 16, per_tensor_scale=torch.tensor(global_scale, dtype=torch.float32))
        plain = scales.view(torch.uint8)
    else:
        from torchao.prototype.mx_formats.mx_tensor import ScaleCalculationMode, to_mx

        scales, q = to_mx(x, torch.float8_e4m3fn, 32, ScaleCalculationMode.FLOOR)
        plain = scales.view(torch.uint8).reshape(x.shape[0], -1)
        q = q.view(torch.uint8)
    return q.reshape(x.shape[0], -1).numpy(), to_blocked(plain).numpy(), plain.numpy()


def compare(fmt: str, x, q, sf, global_scale: float) -> dict:
    """Bit comparison with torchao. Elements of blocks holding NaN are not compared: torchao's e2m1
    rounding has no NaN case (its result depends on the NaN's bit pattern); their scale factor is."""
    import numpy as np
    import torch

    vec = 16 if fmt == "nvfp4" else 32
    ref_q, ref_sf, plain = reference(fmt, x, global_scale)
    rows, cols = x.shape
    nan_blocks = torch.isnan(x.float()).reshape(rows, cols // vec, vec).any(-1).numpy()
    per_byte = vec // 2 if fmt == "nvfp4" else vec
    mask = np.repeat(~nan_blocks, per_byte, axis=1)
    sf_equal = int((ref_sf == sf[:ref_sf.size]).sum())
    q_equal = int(((ref_q == q) | ~mask).sum())
    return {"sf_bytes": int(ref_sf.size), "sf_equal": sf_equal, "q_bytes": int(q.size), "q_equal": q_equal,
            "nan_blocks": int(nan_blocks.sum()), "nan_block_sf_is_nan": bool(
                (plain[nan_blocks] == (0x7F if fmt == "nvfp4" else 0xFF)).all()),
            "ok": sf_equal == ref_sf.size and q_equal == q.size}


# ---- run (device) -----------------------------------------------------------------------------------
def run(out_dir: str) -> int:
    import numpy as np
    import torch

    import aotc.runtime as rt
    from aotc.runtime import quantize as rq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved: dict = {}
    log: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "host": platform.node(),
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": [], "timing": []}
    try:
        import torchao  # noqa: F401

        have_ref = True
    except Exception as exc:  # noqa: BLE001 - the reference is optional here; the report redoes it
        have_ref, log["torchao"] = False, repr(exc)
    for fmt in FORMATS:
        for name, data in cases(fmt).items():
            for in_dtype in IN_DTYPES:
                tdt = torch.bfloat16 if in_dtype == "bf16" else torch.float16
                x = torch.from_numpy(data).to(tdt)
                if in_dtype == "fp16" and name in ("tiny", "huge", "dynamic_range"):
                    continue  # out of fp16's range: the bf16 runs cover these
                gs = global_scale_for(fmt, name, x)
                for arch in ARCHS:
                    xd = x.cuda()
                    cols = x.shape[1]
                    q = torch.full((x.shape[0], cols // 2 if fmt == "nvfp4" else cols), 0xAB, dtype=torch.uint8,
                                   device="cuda")
                    sf = torch.full((rq.sf_bytes(x.shape[0], cols, fmt),), 0xAB, dtype=torch.uint8, device="cuda")
                    kernel = rt.get_kernel(FAMILY, {"format": fmt, "in_dtype": in_dtype, "threads": 256},
                                           arch=arch)
                    args = kernel.args_type()
                    args.x, args.q, args.sf = xd.data_ptr(), q.data_ptr(), sf.data_ptr()
                    args.rows, args.cols, args.x_row_stride = x.shape[0], cols, cols
                    args.global_scale = gs if fmt == "nvfp4" else 0.0
                    kernel.launch(args, 0)
                    torch.cuda.synchronize()
                    key = f"{fmt}.{name}.{in_dtype}.{arch}"
                    qh, sfh = q.cpu().numpy(), sf.cpu().numpy()
                    saved[key + ".q"], saved[key + ".sf"] = qh, sfh
                    saved[f"{fmt}.{name}.{in_dtype}.x"] = x.view(torch.int16).numpy()
                    saved[f"{fmt}.{name}.{in_dtype}.global_scale"] = np.float32(gs)
                    entry = {"case": key, "rows": x.shape[0], "cols": cols, "global_scale": gs, "kernel": kernel.name}
                    if have_ref:
                        entry |= compare(fmt, x, qh, sfh, gs)
                    log["runs"].append(entry)
                    print(json.dumps(entry), flush=True)
    # The op itself (aotc.runtime.quantize_*: argument checks, kernel choice) on both formats; the
    # large shape makes the per-call host cost (~25 us) small against the kernel.
    for rows, cols in ((4096, 7168), (16384, 16384)):
        x = torch.randn(rows, cols, dtype=torch.bfloat16, device="cuda")
        for fmt in FORMATS:
            q = torch.empty(rows, cols // 2 if fmt == "nvfp4" else cols, dtype=torch.uint8, device="cuda")
            sf = torch.empty(rq.sf_bytes(rows, cols, fmt), dtype=torch.uint8, device="cuda")
            fn = (lambda x=x, q=q, sf=sf: rt.quantize_nvfp4(x, q, sf, global_scale=0.01)) if fmt == "nvfp4" else \
                (lambda x=x, q=q, sf=sf: rt.quantize_mxfp8(x, q, sf))
            kernel = fn()
            torch.cuda.synchronize()
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(50):
                fn()
            stop.record()
            torch.cuda.synchronize()
            ms = start.elapsed_time(stop) / 50
            moved = x.numel() * 2 + q.numel() + sf.numel()
            log["timing"].append({"format": fmt, "shape": [rows, cols], "kernel": kernel.name, "arch": kernel.arch,
                                  "ms": round(ms, 4), "GB_per_s": round(moved / ms / 1e6, 1)})
            print(json.dumps(log["timing"][-1]), flush=True)
        del x
    chain(saved)
    np.savez_compressed(out / "quantize_run.npz", **saved)
    (out / "quantize_run.json").write_text(json.dumps(log, indent=1))
    bad = [r["case"] for r in log["runs"] if have_ref and not r.get("ok")]
    print("mismatching cases:", bad or "none")
    return 1 if bad else 0


def chain(saved: dict) -> None:
    """A and B of one small NVFP4 GEMM, quantized by the op on the GPU (for the CPU chain test)."""
    import numpy as np
    import torch

    import aotc.runtime as rt
    from aotc.runtime import quantize as rq

    m, n, k = CHAIN_SHAPE
    gen = torch.Generator().manual_seed(11)
    for name, rows in (("a", m), ("b", n)):
        x = torch.randn(rows, k, generator=gen).to(torch.bfloat16)
        gs = rq.nvfp4_global_scale(float(x.float().abs().max()))
        q = torch.empty(rows, k // 2, dtype=torch.uint8, device="cuda")
        sf = torch.zeros(rq.sf_bytes(rows, k), dtype=torch.uint8, device="cuda")
        rt.quantize_nvfp4(x.cuda(), q, sf, global_scale=gs)
        torch.cuda.synchronize()
        saved[f"chain.{name}.x"] = x.view(torch.int16).numpy()
        saved[f"chain.{name}.q"], saved[f"chain.{name}.sf"] = q.cpu().numpy(), sf.cpu().numpy()
        saved[f"chain.{name}.global_scale"] = np.float32(gs)


# ---- report (here) ----------------------------------------------------------------------------------
def report(npz_path: str, out_md: str) -> int:
    import numpy as np
    import torch

    data = np.load(npz_path)
    run_log = json.loads(Path(npz_path).with_suffix(".json").read_text())
    rows, bad = [], 0
    for entry in run_log["runs"]:
        fmt, name, in_dtype, arch = entry["case"].split(".")
        raw = torch.from_numpy(data[f"{fmt}.{name}.{in_dtype}.x"])
        x = raw.view(torch.bfloat16 if in_dtype == "bf16" else torch.float16)
        res = compare(fmt, x, data[entry["case"] + ".q"], data[entry["case"] + ".sf"], float(entry["global_scale"]))
        bad += not res["ok"]
        rows.append(f"| {fmt} | {name} | {in_dtype} | {arch} | {entry['rows']}x{entry['cols']} | "
                    f"{res['sf_equal']}/{res['sf_bytes']} | {res['q_equal']}/{res['q_bytes']} | "
                    f"{res['nan_blocks']}{' (SF NaN)' if res['nan_blocks'] and res['nan_block_sf_is_nan'] else ''} | "
                    f"{'yes' if res['ok'] else 'NO'} |")
    timing = "\n".join(f"| {t['format']} | {t['shape'][0]}x{t['shape'][1]} bf16 | {t['arch']} | {t['ms']} | "
                       f"{t['GB_per_s']} |" for t in run_log["timing"])
    torchao_version = __import__("torchao").__version__
    device_ok = [r.get("ok") for r in run_log["runs"]]
    device_verdict = (f"{sum(bool(v) for v in device_ok)}/{len(device_ok)} cases bit-exact"
                      if all(v is not None for v in device_ok) else "torchao did not import there")
    text = f"""# Quantize (quantize_blockscaled) on the {run_log['device']}

- Card: {run_log['device']} (lent GPU machine), torch {run_log['torch']}; run {run_log['date']}.
- Command (GPU machine): `AOTC_CACHE_DIR=CACHE python3 tools/device_quantize.py run OUT`, with CACHE built on
  the CPU machine by `python tools/device_quantize.py build CACHE` (sm_90a builds: the software e2m1
  rounding; an sm_80 cubin does not run on sm_90, so the sm_80 builds are compiled only).
- Comparison: `python tools/device_quantize.py report OUT/quantize_run.npz bench/results/quantize_h200.md`
  on the CPU machine, against torchao {torchao_version}'s reference quantizers on CPU tensors:
  `nvfp4_quantize(x, 16, per_tensor_scale)` + `to_blocked` (NVFP4, two-level; global scale = amax / 2688,
  1 for the tiny and one-row cases) and `to_mx(x, float8_e4m3fn, 32, FLOOR)` + `to_blocked` (MXFP8). The
  run compared the same on the GPU machine's CPU (torchao 0.18.0, torch {run_log['torch']}): {device_verdict}.
- Every byte of q and of the scale factors (padding included) is compared. Elements of blocks that
  hold a NaN are not compared (torchao's e2m1 rounding has no NaN case: its output depends on the
  NaN's bit pattern); the scale factor of such a block is, and it is NaN (0x7f / 0xff) as torchao's.

| format | case | input | build | shape | SF bytes equal | q bytes equal | NaN blocks | bit-exact |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Op timing (`aotc.runtime.quantize_*` from Python, CUDA events around 50 back-to-back calls: the
entry point's per-call host cost is inside the figure, which matters for the small shape only; bytes
moved = bf16 input + q + scale factors):

| format | shape | build | ms | GB/s moved |
|---|---|---|---|---|
{timing}
"""
    chain_file = REPO / "tests/data/nvfp4_chain_h200.npz"
    if chain_file.is_file() and any(k.startswith("chain.") for k in data.files):
        kept = np.load(chain_file)
        same = all((data["chain." + k] == kept[k]).all() for k in kept.files)
        text += (f"\nThe GEMM operands this run quantized for the CPU chain test are "
                 f"{'byte-identical to' if same else 'DIFFERENT from'} those kept in tests/data/nvfp4_chain_h200.npz.\n")
    Path(out_md).write_text(text)
    print(text)
    return 1 if bad else 0


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "build" and len(sys.argv) == 3:
        sys.exit(build(sys.argv[2]))
    if mode == "run" and len(sys.argv) == 3:
        sys.exit(run(sys.argv[2]))
    if mode == "report" and len(sys.argv) == 4:
        sys.exit(report(sys.argv[2], sys.argv[3]))
    print(__doc__)
    sys.exit(2)
