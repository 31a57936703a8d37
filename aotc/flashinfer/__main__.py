"""`python -m aotc.flashinfer [--on-miss jit|error] (script.py | -m module) [args...]`: run a
program with the FlashInfer hook installed, without changing its code. Honors AOTC_FLASHINFER=0 (run
without the hook) and AOTC_CACHE_DIR; runtime side only.
"""

from __future__ import annotations

import os
import runpy
import sys

from aotc.flashinfer.hook import ENV_ENABLE, ENV_ON_MISS, install

USAGE = "usage: python -m aotc.flashinfer [--on-miss jit|error] (script.py | -m module) [args...]"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--on-miss"] and len(args) >= 2:
        os.environ[ENV_ON_MISS] = args[1]
        args = args[2:]
    if not args or (args[0] == "-m" and len(args) < 2):
        print(USAGE, file=sys.stderr)
        return 2
    if os.environ.get(ENV_ENABLE, "1").strip().lower() not in ("0", "false", "no", "off"):
        install()
    if args[0] == "-m":
        sys.argv = args[1:]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
