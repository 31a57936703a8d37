"""Static SASS instruction count of cached kernels (cuobjdump -sass of each entry's cubin): a CPU-side
proxy for address-math overhead, e.g. a paged FMHA kernel against its contiguous twin.

    python tools/sass_instruction_count.py --cache-dir <cache> --arch sm90a NAME [NAME ...]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

_INSTRUCTION = re.compile(r"\s+/\*[0-9a-f]{4,}\*/\s+\S")


def count(cubin: bytes, cuobjdump: str) -> int:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([cuobjdump, "-sass", f.name], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in sass.splitlines() if _INSTRUCTION.match(line))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="kernel (spec) names as stored")
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--arch", default="sm90a")
    args = parser.parse_args(argv)
    from aotc.build.toolchain import find_disassemblers
    from aotc.cache import Cache

    cache = Cache(args.cache_dir)
    tools = find_disassemblers()
    if tools is None or not tools.cuobjdump:
        print("no cuobjdump found (install the CUDA toolkit or nvidia-cuda-nvcc)", file=sys.stderr)
        return 2
    cuobjdump = tools.cuobjdump
    for m in cache.entries():
        if m.get("name") in args.names and m.get("arch") == args.arch:
            print(f"{m['name']} {args.arch}: {count(cache.read_blob(m['blobs']['cubin']['sha256']), cuobjdump)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
