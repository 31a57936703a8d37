"""The command line under bad input and hostile pipes: a coded diagnostic and the documented exit
status, never a traceback (real `python -m aotc` processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aotc.cache import Cache
from aotc.keys import sha256_hex


def aotc(*args: str, cwd: Path | None = None, stdin=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "aotc", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, check=False, timeout=120)


def fill(cache: Cache, n: int) -> None:
    for i in range(n):
        key = sha256_hex(f"entry-{i}".encode())
        cache.put_entry(key, {"cubin": f"cubin {i}".encode()}, {
            "name": f"k{i:04d}", "family": "fmha_fwd", "arch": "sm120a", "params": {"i": i},
            "target": {"sm": 120, "variant": "a"}, "spec_key": sha256_hex(f"spec-{i}".encode())})


def test_ls_json_into_a_closed_pipe_ends_quietly(tmp_path):
    cache = Cache(tmp_path / "cache")
    fill(cache, 300)  # ~200 KB of JSON: far more than a pipe holds
    cmd = f"{sys.executable} -m aotc ls --json --cache-dir {cache.root} | head -c 100 > /dev/null; " \
          "echo ${PIPESTATUS[0]} >&2"
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=False, timeout=120)
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "141"


@pytest.mark.parametrize("content,code", [
    (b"[[kernel]]\nname = \"a\"\n\xff\xfe\n", "AOTC-SPEC-001"),
    (b"a = " + b"[" * 3000 + b"]" * 3000 + b"\n", "AOTC-SPEC-001"),
    (b'[[kernel]]\nname = "x\\n#error"\nfamily = "fmha_fwd"\n', "AOTC-SPEC-002"),
    (b'[[kernel]]\nname = "big"\nfamily = "fmha_fwd"\nblock_m = [' + b", ".join(b"%d" % (16 * i) for i in range(1, 200))
     + b"]\nblock_n = [" + b", ".join(b"%d" % i for i in range(100)) + b"]\nhead_dim = 64\nwarps = 4\ndtype = \"bf16\"\n",
     "AOTC-SPEC-009"),
])
def test_bad_spec_files_are_coded_with_exit_1(tmp_path, content, code):
    spec = tmp_path / "bad.toml"
    spec.write_bytes(content)
    for verb, status in (("check", {1}), ("build", {1, 2})):  # build: no kernel left to build is usage (2)
        out = aotc(verb, str(spec), "--cache-dir", str(tmp_path / "cache"))
        assert out.returncode in status, (verb, out.stdout, out.stderr)
        assert code in out.stdout + out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "cache" / "v1" / "actions").exists()  # nothing was built or stored
