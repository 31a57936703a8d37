"""Tensor arguments from DLPack producers (aotc.runtime.tensors reads torch tensors and
__cuda_array_interface__ objects itself): the unversioned DLManagedTensor read through ctypes, no
framework imported. Its own module: a process passing torch tensors never makes these structs.
"""

from __future__ import annotations

import ctypes
from typing import Any

from aotc.runtime.tensors import HOST, TensorInfo, contiguous_strides

KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13
_DLPACK_CODES = {(0, 8): "i8", (0, 16): "i16", (0, 32): "i32", (0, 64): "i64", (1, 8): "u8", (1, 16): "u16",
                 (1, 32): "u32", (2, 16): "f16", (2, 32): "f32", (2, 64): "f64", (4, 16): "bf16", (6, 8): "bool",
                 (10, 8): "e4m3", (12, 8): "e5m2", (14, 8): "ue8m0"}


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def from_dlpack(obj: Any, stream: int) -> TensorInfo:
    dev_type, dev_id = obj.__dlpack_device__()
    if int(dev_type) in (KDL_CUDA, KDL_CUDA_MANAGED):
        # DLPack stream numbering: 1 is the legacy default stream, 0 is not allowed for CUDA.
        capsule = obj.__dlpack__(stream=stream or 1)
    else:
        capsule = obj.__dlpack__()
    # The unversioned DLManagedTensor starts with its DLTensor. The capsule keeps ownership (its
    # destructor calls the deleter); `obj` keeps the memory alive while the caller holds it.
    t = _DLTensor.from_address(_capsule_pointer(capsule, b"dltensor"))
    ndim = t.ndim
    shape = tuple(t.shape[i] for i in range(ndim))
    strides = tuple(t.strides[i] for i in range(ndim)) if t.strides else contiguous_strides(shape)
    key = (t.dtype.code, t.dtype.bits)
    dtype = _DLPACK_CODES.get(key, f"dlpack:{key[0]}/{key[1]}")
    device = int(dev_id) if int(dev_type) in (KDL_CUDA, KDL_CUDA_MANAGED) else HOST
    return TensorInfo((t.data or 0) + t.byte_offset, shape, strides, dtype, device)
