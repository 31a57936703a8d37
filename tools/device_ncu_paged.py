"""Nsight Compute profile of one chunked-prefill problem through a paged kernel and its contiguous
twin (same tile, same K/V), one launch each, for comparing where the paged kernel loses time.

    ncu -k regex:aotc --launch-count 2 --section SpeedOfLight --section WarpStateStats \
        --section InstructionStats python3 tools/device_ncu_paged.py --cache-dir <cache> [--spec NAME]

Builds with tools/device_fmha_paged.py's build step (its specs and twins) when the cache lacks them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import device_fmha_paged as paged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--spec", default=paged.FWD_PAGED[0], choices=paged.FWD_PAGED)
    parser.add_argument("--page-size", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=16)
    args = parser.parse_args(argv)
    import torch

    from aotc import runtime as rt
    from aotc.cache import Cache

    built = paged.build(args.cache_dir, args.jobs)
    rt.set_sources([rt.CacheSource(Cache(args.cache_dir))])
    fwd = built.get(f"{args.spec}/dtype=bf16") or built[args.spec]
    twin = built[paged.TWINS[args.spec]]
    batch, sq, hq, hkv, d = 1, 4096, 32, 8, 128
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(batch, sq, hq, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(batch, sq, hkv, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    kp, table = paged.scatter_pages(k, args.page_size, gen)
    vp = torch.empty_like(kp)
    vp[table.long().reshape(-1)] = v.reshape(-1, args.page_size, hkv, d)
    lens = torch.full((batch,), sq, dtype=torch.int32, device="cuda")
    o_c, o_p = torch.empty_like(q), torch.empty_like(q)
    rt.fmha_fwd(q, k, v, o_c, causal=True, params=twin)
    rt.fmha_fwd_paged(q, kp, vp, table, lens, o_p, causal=True, max_kv_len=sq, params=fwd)
    torch.cuda.synchronize()
    print(f"contiguous {paged.TWINS[args.spec]} then paged {args.spec}; max|diff| "
          f"{float((o_p.float() - o_c.float()).abs().max()):.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
