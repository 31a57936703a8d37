"""Runtime error codes (AOTC-RT-001..) and the constructors that build their diagnostics.
Every runtime failure a user can hit goes through one of these, so the message always says what is
wrong, with the numbers, and what to do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when an error is raised: a serving process that raises none never loads it
    from aotc.diagnostics import AotcError

NO_DEVICE = "AOTC-RT-001"  # no driver, no GPU, bad ordinal
NO_KERNEL = "AOTC-RT-002"  # nothing stored that this device can run
TARGET_MISMATCH = "AOTC-RT-003"  # cubin built for a target the device cannot run
CORRUPT_BLOB = "AOTC-RT-004"  # cache blob missing or failing its digest
HELPER_ABI = "AOTC-RT-005"  # host helper missing, unloadable, or of another ABI version
BAD_TENSOR = "AOTC-RT-006"  # dtype, shape, alignment, device or layout of an argument
PROBLEM_REJECTED = "AOTC-RT-007"  # the kernel's host helper refused the problem (can_implement)
DRIVER_CALL = "AOTC-RT-008"  # a CUDA driver call failed
BAD_PARAMS = "AOTC-RT-009"  # unknown family or invalid kernel parameters
NO_CANDIDATE = "AOTC-RT-010"  # select(): no candidate tile stored for this device


def runtime_error(code: str, message: str, fix: str = "", **details: object) -> AotcError:
    from aotc.diagnostics import AotcError, Diagnostic

    return AotcError(Diagnostic(code=code, message=message, fix=fix, details=dict(details)))


def build_command(arch: str, family: str, name: str = "") -> str:
    """The `aotc build` invocation that produces a kernel for `arch` (by kernel name when known;
    --filter also accepts a family name)."""
    return f"aotc build --arch {arch} --filter {name or family}"
