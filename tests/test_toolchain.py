"""Toolchain discovery with the real installed toolchains: search order, explicit settings, the
AOTC-TOOL-001 error, identity stability, CUTLASS headers, the job plan and the doctor report."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess

import pytest

from aotc.build.toolchain import (
    cutlass_include_dirs,
    cutlass_version,
    doctor,
    find_toolchain,
    max_parallel_jobs,
    plan_parallel_jobs,
)
from aotc.diagnostics import AotcError


def test_default_toolchain_works_and_is_described():
    tc = find_toolchain()
    assert tc.source in {"explicit", "pip", "CUDA_HOME", "PATH"}
    out = subprocess.run([tc.nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    assert f"release {tc.release}," in out
    assert re.fullmatch(r"[0-9a-f]{64}", tc.identity)
    assert os.path.isfile(os.path.join(tc.bin_dir, "ptxas"))
    assert tc.host_compiler and "not found" not in tc.host_compiler


def test_set_cuda_home_wins_over_pip_and_pip_over_path(monkeypatch, tmp_path):
    if importlib.util.find_spec("nvidia") is None:
        pytest.skip("pip CUDA wheels not installed")
    system = shutil.which("nvcc")
    if system is None:
        pytest.skip("no nvcc on PATH to stand for a CUDA_HOME toolkit")
    monkeypatch.delenv("AOTC_NVCC", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    # a CUDA_HOME the user set is used, as torch's cpp_extension does
    home = tmp_path / "cuda"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "nvcc").symlink_to(os.path.realpath(system))
    monkeypatch.setenv("CUDA_HOME", str(home))
    tc = find_toolchain()
    assert tc.source == "CUDA_HOME" and tc.nvcc == str(home / "bin" / "nvcc")
    # without it, the pip wheels come before a bare nvcc on PATH
    monkeypatch.delenv("CUDA_HOME")
    tc = find_toolchain()
    assert tc.source == "pip"
    assert tc.nvcc.endswith(os.path.join("nvidia", "cu13", "bin", "nvcc"))
    # the pip cuobjdump/nvdisasm wheels are preferred too
    assert tc.cuobjdump and tc.cuobjdump.endswith(os.path.join("nvidia", "cu13", "bin", "cuobjdump"))


def test_max_jobs_is_honoured_and_a_bad_value_is_coded(monkeypatch):
    monkeypatch.setenv("MAX_JOBS", "1")
    plan = plan_parallel_jobs(None, 1)
    assert plan.jobs == 1 and "MAX_JOBS" in plan.reason
    assert plan_parallel_jobs(2, 1).jobs == min(2, plan.cores)  # -j wins over MAX_JOBS
    monkeypatch.setenv("MAX_JOBS", "four")
    with pytest.raises(AotcError) as err:
        plan_parallel_jobs(None, 1)
    assert err.value.diagnostics[0].code == "AOTC-TOOL-003"


def test_identity_is_stable_and_distinguishes_toolchains():
    first = find_toolchain()
    assert find_toolchain().identity == first.identity
    system = shutil.which("nvcc")
    if system is None or os.path.realpath(system) == os.path.realpath(first.nvcc):
        pytest.skip("only one nvcc on this machine")
    other = find_toolchain(system)
    assert other.source == "explicit"
    assert other.identity != first.identity  # different binaries, different keys


def test_bogus_explicit_path_is_tool_001():
    with pytest.raises(AotcError) as err:
        find_toolchain("/nonexistent/cuda/bin/nvcc")
    diag = err.value.diagnostics[0]
    assert diag.code == "AOTC-TOOL-001"
    assert "/nonexistent/cuda/bin/nvcc does not exist" in diag.message
    assert "AOTC_NVCC" in diag.fix


def test_bogus_env_setting_is_not_silently_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv("AOTC_NVCC", str(tmp_path))  # a directory, not an executable
    with pytest.raises(AotcError) as err:
        find_toolchain()
    assert err.value.diagnostics[0].code == "AOTC-TOOL-001"
    assert "is a directory" in err.value.diagnostics[0].message


def test_nvcc_that_does_not_run_is_rejected(tmp_path):
    fake = tmp_path / "nvcc"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(AotcError) as err:
        find_toolchain(str(fake))
    assert "--version failed (exit 3)" in err.value.diagnostics[0].message


def test_cutlass_headers_and_version_match_the_installed_package():
    dirs = cutlass_include_dirs()
    assert os.path.isfile(os.path.join(dirs[0], "cutlass", "gemm", "collective", "sm120_blockscaled_mma_tma.hpp"))
    assert os.path.isfile(os.path.join(dirs[1], "cutlass", "util", "device_memory.h"))
    assert importlib.metadata.version("nvidia-cutlass").startswith(cutlass_version())


def test_job_plan_respects_request_cores_and_available_memory():
    cores = len(os.sched_getaffinity(0))
    assert max_parallel_jobs(1, 1) == 1
    assert max_parallel_jobs(10_000, 1) == cores
    huge = plan_parallel_jobs(None, 1 << 60)  # no host has an exbibyte free
    assert huge.jobs == 1 and "memory" in huge.reason
    with open("/proc/meminfo") as f:
        avail_kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    half = avail_kib * 1024 // 2  # room for about two jobs (MemAvailable moves a little)
    plan = plan_parallel_jobs(64, half)
    assert 1 <= plan.jobs <= min(cores, 3)
    assert str(cores) in plan.reason and "GiB available" in plan.reason


def test_doctor_reports_everything_without_needing_a_gpu():
    report = doctor()
    assert report["toolchain"]["release"] == find_toolchain().release
    assert "version" in report["cutlass"] and report["cutlass"]["include_dirs"] == cutlass_include_dirs()
    host = report["host"]
    assert host["cores"] == len(os.sched_getaffinity(0)) and host["max_parallel_jobs"] >= 1
    assert host["mem_total_bytes"] >= host["mem_available_bytes"] > 0
    assert isinstance(report["gpu"]["available"], bool)
    if not report["gpu"]["available"]:
        assert report["gpu"]["why"]
