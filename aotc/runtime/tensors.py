"""Tensor arguments: read pointer, shape, strides, dtype and device from torch tensors, objects with
__cuda_array_interface__, or DLPack producers, without importing any framework; then check them
against what a kernel needs (dtype, shape, alignment, device, layout) with errors that give numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aotc.runtime.errors import BAD_TENSOR, runtime_error

HOST = -1  # device ordinal of host memory
UNKNOWN = -2  # a __cuda_array_interface__ pointer: the producer does not say which device

_TORCH_DTYPES = {
    "torch.bfloat16": "bf16", "torch.float16": "f16", "torch.float32": "f32", "torch.float64": "f64",
    "torch.int8": "i8", "torch.int16": "i16", "torch.int32": "i32", "torch.int64": "i64", "torch.uint8": "u8",
    "torch.float8_e4m3fn": "e4m3", "torch.float8_e5m2": "e5m2", "torch.float8_e8m0fnu": "ue8m0",
    "torch.float4_e2m1fn_x2": "e2m1x2", "torch.bool": "bool",
}
_TYPESTR = {"f2": "f16", "f4": "f32", "f8": "f64", "i1": "i8", "i2": "i16", "i4": "i32", "i8": "i64",
            "u1": "u8", "u2": "u16", "u4": "u32", "b1": "bool"}
ITEMSIZE = {"bf16": 2, "f16": 2, "f32": 4, "f64": 8, "i8": 1, "i16": 2, "i32": 4, "i64": 8, "u8": 1, "u16": 2,
            "u32": 4, "e4m3": 1, "e5m2": 1, "ue8m0": 1, "e2m1x2": 1, "bool": 1}


class TensorInfo:
    """What a kernel needs to know of a tensor argument. A plain slotted class: built several times
    per launch through the typed entry points, and no dataclass machinery at import."""

    __slots__ = ("device", "dtype", "ptr", "shape", "strides")

    def __init__(self, ptr: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: str, device: int):
        self.ptr = ptr
        self.shape = shape
        self.strides = strides  # in elements
        self.dtype = dtype  # aotc name: bf16, f16, f32, i32, u8, e4m3, ...
        self.device = device  # CUDA ordinal, HOST, or UNKNOWN

    def _values(self) -> tuple:
        return (self.ptr, self.shape, self.strides, self.dtype, self.device)

    def __eq__(self, other: object) -> bool:
        return type(other) is TensorInfo and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return (f"TensorInfo(ptr={self.ptr:#x}, shape={self.shape}, strides={self.strides}, dtype={self.dtype!r}, "
                f"device={self.device})")

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * ITEMSIZE.get(self.dtype, 1)

    def is_contiguous(self) -> bool:
        expected = 1
        for size, stride in zip(reversed(self.shape), reversed(self.strides), strict=True):
            if size != 1 and stride != expected:
                return False
            expected *= size
        return True


def tensor_info(obj: Any, stream: int = 0) -> TensorInfo:
    """TensorInfo of a torch tensor, a __cuda_array_interface__ object or a DLPack producer."""
    if hasattr(obj, "data_ptr") and type(obj).__module__.startswith("torch"):
        return _from_torch(obj)
    cai = getattr(obj, "__cuda_array_interface__", None)
    if cai is not None:
        return _from_cai(cai)
    if hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__"):
        from aotc.runtime.dlpack import from_dlpack  # its ctypes structs are made only for DLPack callers

        return from_dlpack(obj, stream)
    raise runtime_error(BAD_TENSOR, f"cannot read a tensor from {type(obj).__name__}",
                        "pass a torch tensor, or an object with __cuda_array_interface__ or __dlpack__")


def _from_torch(t: Any) -> TensorInfo:
    dtype = _TORCH_DTYPES.get(str(t.dtype), str(t.dtype))
    device = t.get_device()  # -1 for host tensors
    return TensorInfo(t.data_ptr(), tuple(t.shape), tuple(t.stride()), dtype, device if device >= 0 else HOST)


def _from_cai(cai: dict) -> TensorInfo:
    shape = tuple(int(s) for s in cai["shape"])
    typestr = cai["typestr"]
    dtype = _TYPESTR.get(typestr[1:], f"raw:{typestr}")
    size = int(typestr[2:]) if typestr[2:].isdigit() else 1
    strides = cai.get("strides")
    if strides is None:
        elem = contiguous_strides(shape)
    else:
        if any(int(s) % size for s in strides):
            raise runtime_error(BAD_TENSOR, f"strides {tuple(strides)} B are not multiples of the {size} B element",
                                "pass an element-aligned view")
        elem = tuple(int(s) // size for s in strides)
    return TensorInfo(int(cai["data"][0] or 0), shape, elem, dtype, UNKNOWN)


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    out, acc = [], 1
    for s in reversed(shape):
        out.append(acc)
        acc *= s
    return tuple(reversed(out))


def pointer_device(ptr: int) -> int:
    """CUDA ordinal owning a device pointer (HOST if the driver does not know it)."""
    from aotc.runtime.device import driver

    cu = driver()
    attr = cu.CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL
    err, value = cu.cuPointerGetAttribute(attr, ptr)
    return int(value) if int(err) == 0 else HOST


def expect(info: TensorInfo, name: str, *, dtype: str | Sequence[str] | None = None,
           shape: Sequence[int | None] | None = None, ndim: int | None = None, align: int = 16,
           device: int | None = None, contiguous: bool = True) -> TensorInfo:
    """Check one argument; AOTC-RT-006 saying which property is off, by how much, and what to pass."""
    allowed = (dtype,) if isinstance(dtype, str) else dtype
    if allowed is not None and info.dtype not in allowed:
        raise _bad(name, f"has dtype {info.dtype}; this kernel takes {' or '.join(allowed)}",
                   f"convert it, e.g. .to({_torch_name(allowed[0])})")
    want_ndim = len(shape) if shape is not None else ndim
    if want_ndim is not None and len(info.shape) != want_ndim:
        raise _bad(name, f"has {len(info.shape)} dimensions {info.shape}; expected {want_ndim}",
                   "reshape it to the documented layout")
    if shape is not None:
        for axis, (got, want) in enumerate(zip(info.shape, shape, strict=True)):
            if want is not None and got != want:
                raise _bad(name, f"has shape {info.shape}; dimension {axis} must be {want}, got {got}",
                           "pass a tensor of the documented shape")
    if contiguous and not info.is_contiguous():
        raise _bad(name, f"is not contiguous (shape {info.shape}, strides {info.strides} elements)",
                   "pass .contiguous()")
    if align and info.ptr % align:
        raise _bad(name, f"address 0x{info.ptr:x} is {info.ptr % align} B past a {align} B boundary; TMA and "
                   f"cp.async need {align} B alignment", "pass a tensor that starts on an aligned address "
                   "(a fresh allocation, not an offset view)")
    if device is not None:
        where = pointer_device(info.ptr) if info.device == UNKNOWN else info.device
        if where != device:
            what = "host memory" if where == HOST else f"CUDA device {where}"
            raise _bad(name, f"is in {what}; the kernel runs on CUDA device {device}",
                       f"move it first, e.g. .to('cuda:{device}')")
    return info


def _bad(name: str, problem: str, fix: str) -> Exception:
    return runtime_error(BAD_TENSOR, f"argument {name!r} {problem}", fix, argument=name)


def _torch_name(dtype: str) -> str:
    for torch_name, ours in _TORCH_DTYPES.items():
        if ours == dtype:
            return torch_name
    return dtype
