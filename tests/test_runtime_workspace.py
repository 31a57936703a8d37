"""The workspace rule every typed op launches through (ops.workspace_arg: fmha_decode,
fmha_decode_paged, the NVFP4 GEMMs, quantize): the caller's buffer when given, checked for size
before any driver call; nothing when the kernel needs none. (The allocator path is recorded on real
sm120a builds in tests/test_runtime_nvfp4.py; capture on a GPU in tools/device_serving.py.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aotc.diagnostics import AotcError
from aotc.runtime import ops

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_runtime_nvfp4 import DeviceBytes  # a DLPack producer for made-up device addresses


class Needs:
    spec_key = "stub"

    def __init__(self, nbytes: int):
        self.nbytes = nbytes

    def workspace_bytes(self, args) -> int:
        return self.nbytes


def test_the_callers_workspace_is_used_as_given():
    ws = DeviceBytes(0x7F00_0000_0000, (8192,), "u8")
    assert ops.workspace_arg(Needs(4096), None, 0, 0x51, None, ws) == (0x7F00_0000_0000, ws)


def test_a_short_workspace_names_the_bytes_needed():
    ws = DeviceBytes(0x7F00_0000_0000, (1024,), "u8")
    with pytest.raises(AotcError) as exc:
        ops.workspace_arg(Needs(4096), None, 0, 0x51, None, ws)
    diag = exc.value.diagnostics[0]
    assert diag.code == "AOTC-RT-006" and "1024 B" in diag.message and "4096 B" in diag.message


def test_no_workspace_is_taken_when_none_is_needed():
    ws = DeviceBytes(0x7F00_0000_0000, (16,), "u8")  # too small, never looked at
    assert ops.workspace_arg(Needs(0), None, 0, 0x51, None, ws) == (0, None)
