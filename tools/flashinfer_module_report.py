"""What aotc's verification found in the FlashInfer modules of a cache: per module, the embedded
cubins' targets, MMA opcodes, banned (tcgen05/wgmma) opcodes, largest static SMEM against the
budget, registers and local memory, and the summed compile time.

    python tools/flashinfer_module_report.py CACHE_DIR [--json OUT.json]

Dynamic SMEM is known for the CUTLASS kernels the build probed (aotc/flashinfer/smem_probe.py);
other kernels' dynamic SMEM is set by FlashInfer's host code at launch and is not in the cubin.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aotc.arch import ARCHES
from aotc.cache import Cache
from aotc.flashinfer.index import FAMILY, SO_BLOB


def module_rows(cache: Cache) -> list[dict]:
    rows = []
    for manifest in cache.entries():
        if manifest.get("family") != FAMILY:
            continue
        kernels = [k for c in manifest["cubins"] for k in c["kernels"].values()]
        mma: Counter = Counter()
        for c in manifest["cubins"]:
            mma.update(c["sass"]["mma"])
        rows.append({
            "module": manifest["name"], "arch": manifest["arch"],
            "so_bytes": manifest["blobs"][SO_BLOB]["size"], "cubins": len(manifest["cubins"]),
            "kernels": len(kernels), "targets": sorted({c["target"] for c in manifest["cubins"]}),
            "mma": dict(sorted(mma.items())),
            "banned": sorted({b for c in manifest["cubins"] for b in c["sass"]["banned"]}),
            "all_ok": all(c["ok"] for c in manifest["cubins"]),
            "max_smem_static": max((k["smem_static"] for k in kernels), default=0),
            "max_smem_static_plus_dynamic": max((k["smem_static"] + k.get("smem_dynamic", 0) for k in kernels),
                                                default=0),
            "smem_probe": manifest.get("smem_probe", {}),
            "smem_budget": ARCHES[manifest["arch"]].smem_optin_bytes,
            "max_registers": max((k.get("registers", 0) for k in kernels), default=0),
            "kernels_with_local_memory": sum(1 for k in kernels if k.get("local_bytes", 0)),
            "compile_seconds": manifest.get("compile_seconds", 0.0),
            "nvcc": manifest["toolchain"]["nvcc_version"], "flashinfer": manifest["flashinfer_version"],
        })
    return sorted(rows, key=lambda r: (r["arch"], r["module"]))


def _probed(probe: dict) -> str:
    if "error" in probe:
        return f"not probed ({probe['error'][:80]})"
    return str(probe.get("probed", "-"))


def markdown(rows: list[dict]) -> str:
    head = ("| module | arch | .so | cubins | kernels | targets | MMA SASS | banned | max static SMEM / budget "
            "| CUTLASS kernels probed | max static + dynamic SMEM | max regs | kernels w/ local mem | compile (serial) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r['module']} | {r['arch']} | {r['so_bytes'] / 1e6:.1f} MB | {r['cubins']} | {r['kernels']} | "
        f"{', '.join(r['targets'])} | {', '.join(f'{k} {v}' for k, v in r['mma'].items()) or '-'} | "
        f"{', '.join(r['banned']) or 'none'} | {r['max_smem_static']:,} / {r['smem_budget']:,} B | "
        f"{_probed(r['smem_probe'])} | {r['max_smem_static_plus_dynamic']:,} B | "
        f"{r['max_registers']} | {r['kernels_with_local_memory']} | {r['compile_seconds']:.0f} s |\n"
        for r in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache_dir")
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = module_rows(Cache(args.cache_dir))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    print(markdown(rows))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
