"""One contiguous prefill problem through a catalog FMHA tile and through torch SDPA's FlashAttention-2
kernel on the same Q/K/V, one launch each, for Nsight Compute to compare where the catalog tile loses
time (the head_dim 256 gap of bench/results/fmha_nvidia_h200.md).

    ncu -k 'regex:aotc|flash_fwd' --launch-count 2 --set full --clock-control none \
        python3 tools/device_ncu_fmha.py --cache-dir <cache> [--spec fmha_fwd_d256] [--head-dim 256]

Builds the spec for this GPU's target into --cache-dir first (aotc's own pipeline) when missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling device_fmha.py
from device_fmha import build_for_this_gpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--spec", nargs="+", default=["fmha_fwd_d256"], help="catalog spec names (one launch each)")
    parser.add_argument("--head-dim", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seqlen", type=int, default=4096)
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--build-only", action="store_true")
    args = parser.parse_args(argv)
    built = build_for_this_gpu(args.cache_dir, lambda s: s.name.split("/")[0] in args.spec, args.jobs)
    missing = set(args.spec) - {name.split("/")[0] for name in built}
    if missing:
        raise SystemExit(f"not in the catalog: {sorted(missing)}")
    if args.build_only:
        return 0
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    from aotc import runtime as rt
    from aotc.cache import Cache

    rt.set_sources([rt.CacheSource(Cache(args.cache_dir))])
    b, s, hq, hkv, d = args.batch, args.seqlen, 32, 8, args.head_dim
    q = torch.randn(b, s, hq, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(b, s, hkv, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    o = torch.empty_like(q)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        ref = sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=args.causal,
                   enable_gqa=True).transpose(1, 2)
    for name in args.spec:
        params = next(p for n, p in built.items() if n.split("/")[0] == name and p.get("head_dim") == d)
        rt.fmha_fwd(q, k, v, o, causal=args.causal, params=params)
        torch.cuda.synchronize()
        rel = float((o.float() - ref.float()).norm() / ref.float().norm())
        print(f"SDPA flash then {name}: b={b} s={s} d={d} causal={int(args.causal)}; rel diff {rel:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
