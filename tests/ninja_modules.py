"""FlashInfer-shaped build.ninja files for tests of aotc's ninja workspaces (local and on Ray)."""

from __future__ import annotations

import textwrap
from pathlib import Path


def ninja_module(ws: Path, name: str, source: str = "", prefix: str = "") -> str:
    """A generated source and header under the workspace, one compile step with a depfile (its
    command after `prefix`), and the link; returns the build.ninja path."""
    gen, out = ws / "generated" / name, ws / "cached_ops" / name
    gen.mkdir(parents=True)
    out.mkdir(parents=True)
    (gen / "config.h").write_text(f"#define VALUE_{name} 7\n")
    source = source or f"int {name}(void) {{ return VALUE_{name}; }}"
    (gen / f"{name}.c").write_text(f'#include "config.h"\n{source}\n')
    (out / "build.ninja").write_text(textwrap.dedent(f"""\
        rule cc
          command = {prefix}cc -MD -MF $out.d -fPIC -I{gen} -c $in -o $out
          depfile = $out.d
          deps = gcc
        rule link
          command = cc -shared $in -o $out
        build {out}/{name}.o: cc {gen}/{name}.c
        build {out}/{name}.so: link {out}/{name}.o
        """))
    return str(out / "build.ninja")
