"""The command line as users of other build tools expect it: --version, python -m aotc, options before
or after the verb, arch spellings, did-you-mean, usage errors on stderr with exit 2, NO_COLOR and TTY
detection, -v echoing nvcc command lines, and an nvcc launcher (sccache/ccache) in front of nvcc."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from aotc import ABI_VERSION, __version__
from aotc.arch import get_arch
from aotc.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def aotc(*argv, env=None, **kw):
    """`python -m aotc ...` in a subprocess, as a user's shell runs it."""
    return subprocess.run([sys.executable, "-m", "aotc", *argv], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, check=False, **kw)


def test_version_names_aotc_abi_toolchain_and_cutlass():
    from aotc.build.toolchain import cutlass_version, find_toolchain

    out = aotc("--version")
    assert out.returncode == 0, out.stderr
    assert f"aotc {__version__} (launch ABI {ABI_VERSION})" in out.stdout
    tc = find_toolchain()
    assert f"nvcc {tc.release} ({tc.source}: {tc.nvcc})" in out.stdout
    assert f"CUTLASS: {cutlass_version()}" in out.stdout


def test_global_options_before_or_after_the_verb(capsys, tmp_path):
    code_a, before, _ = run(capsys, "--json", "--cache-dir", str(tmp_path), "ls")
    code_b, after, _ = run(capsys, "ls", "--json", "--cache-dir", str(tmp_path))
    assert code_a == code_b == 0
    assert json.loads(before) == json.loads(after)
    assert json.loads(before)["root"] == str(tmp_path)  # --cache-dir before the verb was not reset
    code, mixed, _ = run(capsys, "--json", "families", "fmha_fwd")
    assert code == 0 and "block_m" in json.loads(mixed)["fmha_fwd"]["fields"]


@pytest.mark.parametrize("spelling", ["12.0a", "sm_120a", "120a", "compute_120a", "SM120A"])
def test_arch_spellings_of_torch_and_nvcc(capsys, spelling):
    code, out, _ = run(capsys, "check", "--json", "--filter", "fmha_fwd_m64n64", "--arch", spelling)
    assert code == 0
    assert {v["arch"] for v in json.loads(out)["verdicts"]} == {"sm120a"}
    assert [a.name for a in __import__("aotc.arch").arch.parse_arch_list("9.0a;12.0a 12.0f")] == \
        ["sm90a", "sm120a", "sm120f"]  # a TORCH_CUDA_ARCH_LIST value reads as it is


def test_unknown_names_get_a_did_you_mean_and_exit_2(capsys, tmp_path):
    code, out, err = run(capsys, "check", "--arch", "sm_12a")
    assert code == 2 and not out and "did you mean" in err and "sm120a" in err
    code, out, err = run(capsys, "families", "fmha_fw")
    assert code == 2 and not out
    assert "AOTC-CLI-005" in err and "did you mean fmha_fwd" in err
    spec = tmp_path / "typo.toml"
    spec.write_text('[[kernel]]\nname = "k"\nfamily = "fmha_fwd"\nblok_m = 64\nblock_n = 64\nhead_dim = 64\n'
                    '[[kernel]]\nname = "j"\nfamily = "fmha_fw"\n')
    code, out, _ = run(capsys, "check", str(spec))
    assert code == 1
    assert "unknown parameter 'blok_m'; did you mean block_m" in out
    assert "unknown family 'fmha_fw'; did you mean fmha_fwd" in out
    assert get_arch("12.1a").name == "sm121a"


def test_usage_errors_go_to_stderr_with_exit_2(tmp_path):
    missing = aotc("check", str(tmp_path / "missing.toml"))
    assert missing.returncode == 2 and missing.stdout == ""
    assert "AOTC-CLI-006" in missing.stderr and "missing.toml" in missing.stderr
    bad_option = aotc("ls", "--no-such-option")
    assert bad_option.returncode == 2 and bad_option.stdout == "" and "unrecognized" in bad_option.stderr
    for name, content in (("absent.whl", None), ("junk.whl", b"not a zip at all")):
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        out = aotc("wheel", "--check", str(path), "--arch", "sm120a")
        assert out.returncode == 2, out.stderr
        assert "AOTC-CLI-007" in out.stderr and "Traceback" not in out.stderr
    unwritable = aotc("report", "--out", "/proc/aotc-report", "--cache-dir", str(tmp_path / "c"))
    assert unwritable.returncode == 1 and "AOTC-CLI-008" in unwritable.stderr and "/proc/aotc-report" in \
        unwritable.stderr and "Traceback" not in unwritable.stderr
    nothing = aotc("build", "--filter", "no_such_kernel_zzz", "--cache-dir", str(tmp_path / "c"))
    assert nothing.returncode == 2 and "AOTC-CLI-009" in nothing.stderr
    not_aotc = tmp_path / "other.whl"
    with zipfile.ZipFile(not_aotc, "w") as zf:
        zf.writestr("x/__init__.py", "")
    out = aotc("wheel", "--check", str(not_aotc))
    assert out.returncode != 0 and "AOTC-WHEEL-004" in out.stderr and "Traceback" not in out.stderr


def test_doctor_with_a_bad_nvcc_is_a_coded_failure(tmp_path):
    out = aotc("doctor", env={"AOTC_NVCC": str(tmp_path / "no-nvcc")})
    assert out.returncode == 2
    assert "AOTC-TOOL-001" in out.stderr and "fix:" in out.stderr
    assert "{'code'" not in out.stdout and "ERROR AOTC-TOOL-001" in out.stdout
    ok = aotc("doctor", "--json")
    assert ok.returncode == 0 and "error" not in json.loads(ok.stdout)["toolchain"]


def _run_in_pty(argv, env):
    """Run with stdout on a pseudo-terminal, as in an interactive shell; returns what it printed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "aotc", *argv], stdout=follower, stderr=subprocess.PIPE,
                            cwd=ROOT, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(leader)
    return b"".join(chunks).decode()


def test_colour_only_on_a_terminal_and_never_with_no_color():
    argv = ["check", "--filter", "fmha_fwd_m64n64"]
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    on_tty = _run_in_pty(argv, {**env, "TERM": "xterm"})
    assert "\x1b[32mok\x1b[0m" in on_tty
    assert "\x1b[" not in _run_in_pty(argv, {**env, "TERM": "xterm", "NO_COLOR": "1"})
    piped = aotc(*argv, env={"TERM": "xterm"})
    assert piped.returncode == 0 and "ok    fmha_fwd_m64n64" in piped.stdout and "\x1b[" not in piped.stdout


TINY = 'extern "C" __global__ void aotc_kernel(float* out) { out[threadIdx.x] = 1.0f; }\n'


def test_verbose_echoes_nvcc_and_launcher_runs_it(tmp_path, monkeypatch, capfd):
    from aotc.build.compile import compile_source
    from aotc.build.toolchain import find_toolchain

    record = tmp_path / "launcher.log"
    launcher = tmp_path / "my launcher.sh"  # a space: the variable is split like a shell would
    launcher.write_text(f'#!/bin/sh\necho "$@" >> "{record}"\nexec "$@"\n')
    launcher.chmod(0o755)
    monkeypatch.setenv("AOTC_NVCC_LAUNCHER", f"'{launcher}'")
    monkeypatch.setenv("AOTC_VERBOSE", "1")
    tc = find_toolchain()
    result = compile_source(TINY, get_arch("sm120a"), tc, include_dirs=[], with_helper=False, workdir=tmp_path)
    assert result.ok, result.error
    launched = record.read_text().splitlines()
    assert len(launched) == 1 and launched[0].startswith(tc.nvcc + " -cubin")
    assert f"$ '{launcher}' {tc.nvcc} -cubin" in capfd.readouterr().err
    monkeypatch.setenv("AOTC_NVCC_LAUNCHER", str(tmp_path / "not-installed"))
    result = compile_source(TINY, get_arch("sm120a"), tc, include_dirs=[], with_helper=False, workdir=tmp_path)
    assert not result.ok and "AOTC_NVCC_LAUNCHER" in result.error


def test_python_dash_m_aotc_is_the_cli():
    out = aotc("--help")
    assert out.returncode == 0 and "usage: aotc" in out.stdout and "families" in out.stdout
    from_module = aotc("families", "--json")
    assert json.loads(from_module.stdout).keys() >= {"fmha_fwd", "grouped_gemm_sm80"}


def test_readme_tables_every_environment_variable_the_code_reads():
    import re

    read = set()
    for path in (ROOT / "aotc").rglob("*.py"):
        text = path.read_text()
        read |= set(re.findall(r"os\.environ(?:\.get)?[\[(]\s*\"([A-Z][A-Z0-9_]+)\"", text))
        read |= set(re.findall(r"^\w*ENV\w* = \"([A-Z][A-Z0-9_]+)\"", text, re.MULTILINE))
        read |= set(re.findall(r"for var in \(\"(CUDA_HOME)\"", text))
    # set by aotc for its own FlashInfer build worker, never by a user
    internal = {"FLASHINFER_WORKSPACE_BASE"}
    assert {"AOTC_NVCC", "AOTC_CACHE_DIR", "MAX_JOBS", "NO_COLOR"} <= read  # the scan finds them
    table = (ROOT / "README.md").read_text().split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    assert read - internal <= listed, sorted(read - internal - listed)
