"""Kernel wheel sizes of a built cache: per arch, the wheel `aotc wheel` writes and the one
`aotc wheel --with-sources` writes, what their zips spend on manifests, the blob bytes by role (raw
and as stored; every role, whether the default wheel packs it or not), the stored bytes each kernel
adds per family, and the platform tag. JSON on stdout.

    python tools/bench_wheels.py --cache-dir CACHE --arch sm120a --out dist-bench
"""

from __future__ import annotations

import argparse
import json
import platform
import zipfile
from collections import defaultdict
from pathlib import Path

from aotc.arch import parse_arch_list
from aotc.build.wheel_pack import build_wheel, select_entries
from aotc.cache import Cache


def zip_bytes(whl: Path) -> dict:
    """The wheel's size and the compressed bytes its zip spends on manifests and on blobs."""
    with zipfile.ZipFile(whl) as zf:
        infos = zf.infolist()
        meta = json.loads(zf.read(next(n for n in zf.namelist() if n.endswith("aotc_wheel.json"))))
    return {"wheel": whl.name, "bytes": whl.stat().st_size, "platform": meta.get("platform"),
            "blobs_left_out": meta.get("blobs_left_out", []),
            "manifests_in_zip": sum(i.compress_size for i in infos if "/actions/" in i.filename),
            "manifests_raw": sum(i.file_size for i in infos if "/actions/" in i.filename),
            "blobs_in_zip": sum(i.compress_size for i in infos if i.filename.endswith(".zst"))}


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
        name = f"aotc-kernels-{arch.name}"
        wheel = zip_bytes(build_wheel(cache, entries, name, Path(args.out)))
        full = zip_bytes(build_wheel(cache, entries, name, Path(args.out) / "with-sources", sources=True))
        raw, stored, seen = defaultdict(int), defaultdict(int), set()
        per_family: dict[str, list[int]] = defaultdict(list)  # stored bytes each kernel adds (shared blobs once)
        for _, m in entries:
            adds = 0
            for role, blob in m["blobs"].items():
                if blob["sha256"] in seen:
                    continue
                seen.add(blob["sha256"])
                st = cache.store.stat(blob["sha256"])
                raw[role] += st.raw_bytes
                stored[role] += st.stored_bytes
                adds += st.stored_bytes if role not in wheel["blobs_left_out"] else 0
            per_family[m["family"]].append(adds)
        rows.append({"arch": arch.name, "kernels": len(entries), "wheel": wheel, "with_sources": full,
                     "raw": dict(raw), "stored": dict(stored),
                     "stored_per_kernel_by_family": {f: round(sum(v) / len(v)) for f, v in sorted(per_family.items())}})
    print(json.dumps({"machine": platform.node(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
