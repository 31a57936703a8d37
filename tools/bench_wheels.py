"""Kernel wheel sizes of a built cache: one wheel per arch (what `aotc wheel` writes), the bytes by role
(cubins, host helpers, sources; raw and as stored), the platform tag and version it got, and what
zstd dictionaries trained per family would save on top (an experiment: the store does not use them).

    python tools/bench_wheels.py --cache-dir CACHE --arch sm120a --out dist-bench
"""

from __future__ import annotations

import argparse
import json
import platform
import zipfile
from collections import defaultdict
from pathlib import Path

import zstandard

from aotc.arch import parse_arch_list
from aotc.build.wheel_pack import build_wheel, select_entries
from aotc.cache import Cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--arch", default="sm120a")
    ap.add_argument("--out", default="dist-bench")
    args = ap.parse_args()
    cache = Cache(Path(args.cache_dir))
    rows = []
    for arch in parse_arch_list(args.arch):
        entries = select_entries(cache, [arch])
        if not entries:
            continue
        whl = build_wheel(cache, entries, f"aotc-kernels-{arch.name}", Path(args.out))
        with zipfile.ZipFile(whl) as zf:
            meta = json.loads(zf.read(next(n for n in zf.namelist() if n.endswith("aotc_wheel.json"))))
        raw, stored, seen = defaultdict(int), defaultdict(int), set()
        per_family: dict[str, list[int]] = defaultdict(list)  # stored bytes each kernel adds (shared blobs once)
        by_family: dict[str, list[bytes]] = defaultdict(list)
        for _, m in entries:
            adds = 0
            for role, blob in m["blobs"].items():
                if blob["sha256"] in seen:
                    continue
                seen.add(blob["sha256"])
                data = cache.read_blob(blob["sha256"])
                raw[role] += len(data)
                stored[role] += cache.store.stat(blob["sha256"]).stored_bytes
                adds += cache.store.stat(blob["sha256"]).stored_bytes
                if role in ("cubin", "source"):
                    by_family[f"{m['family']}/{role}"].append(data)
            per_family[m["family"]].append(adds)
        # per family and role: a 16 KiB dictionary trained on that group, level 19, against level 19 alone
        plain = with_dict = 0
        for group in by_family.values():
            plain_group = sum(len(zstandard.ZstdCompressor(level=19).compress(d)) for d in group)
            best = plain_group
            if len(group) >= 4:
                try:
                    dictionary = zstandard.train_dictionary(16 << 10, group)
                    comp = zstandard.ZstdCompressor(level=19, dict_data=dictionary)
                    best = min(best, sum(len(comp.compress(d)) for d in group) + len(dictionary.as_bytes()))
                except zstandard.ZstdError:
                    pass  # too few samples to train on: no dictionary
            plain += plain_group
            with_dict += best
        rows.append({"arch": arch.name, "wheel": whl.name, "bytes": whl.stat().st_size, "kernels": len(entries),
                     "raw": dict(raw), "stored": dict(stored), "platform": meta.get("platform"),
                     "stored_per_kernel_by_family": {f: round(sum(v) / len(v)) for f, v in sorted(per_family.items())},
                     "cubin_source_zstd19": plain, "cubin_source_with_family_dicts": with_dict})
    print(json.dumps({"machine": platform.node(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
