"""What every typed entry point shares (aotc.runtime.attention, .gemm, .paged, .moe, .quantize): the
caller's stream, the memo that lets an unchanged call skip checks and packing, workspaces from the
caller's allocator, and the choice of a stored kernel for a problem. Each entry point checks its
tensors, chooses a kernel (or takes explicit params), fills the family's args struct and launches;
argument layouts follow the families' templates (documented in docs/runtime.md). The ops live in
their own modules so that a process serving attention never imports the GEMM entry points.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from aotc.runtime import registry
from aotc.runtime.device import Device
from aotc.runtime.errors import BAD_TENSOR, NO_KERNEL, runtime_error
from aotc.runtime.launch import Kernel
from aotc.runtime.recall import Found, recall_choices, remember_choices
from aotc.runtime.registry import get_kernel
from aotc.runtime.tensors import HOST, UNKNOWN, TensorInfo, expect, tensor_info

CHOICES_LIMIT = 4096  # problem signatures kept before the memo starts over
_choices: dict[tuple, tuple[int, Kernel]] = {}  # (family, ordinal, signature) -> (registry generation, kernel)


def default_stream(tensor: Any, ordinal: int) -> int:
    """torch's current stream when given torch tensors (what the caller's other work is queued on),
    else the legacy default stream."""
    if type(tensor).__module__.startswith("torch"):
        return _torch_stream(ordinal)
    return 0


def _torch_stream(ordinal: int) -> int:
    torch = sys.modules["torch"]
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)  # an int, no Stream object (~0.2 us)
    return int(raw(ordinal)) if raw is not None else int(torch.cuda.current_stream(ordinal).cuda_stream)


# ---- warm path: an unchanged call signature skips checks, choice and argument packing --------------
FAST_LIMIT = 4096  # signatures kept before the memo starts over
_fast: dict[tuple, tuple] = {}  # signature -> (registry generation, kernel, launch calls, owners kept alive)


def _fast_hit(key: tuple) -> Kernel | None:
    """Fire the memoized launches of an unchanged signature (torch tensors only: pointers, shapes,
    strides and dtypes are in the key, so equal keys mean an equal, already checked problem)."""
    hit = _fast.get(key)
    if hit is None or hit[0] != registry._generation:
        return None
    kernel = hit[1]
    kernel.fire_all(hit[2])
    return kernel


def _fast_store(key: tuple | None, kernel: Kernel, calls: tuple, keep: Any = None) -> None:
    if key is None:
        return
    if len(_fast) >= FAST_LIMIT:
        _fast.clear()
    _fast[key] = (registry._generation, kernel, calls, keep)


def _tensor_key(t: Any) -> tuple:
    return (t.data_ptr(), t.shape, t.stride(), t.dtype)


# ---- workspaces from the caller's allocator (CUDA-graph safe) -------------------------------------
_workspaces: dict[tuple, tuple[int, int, Any]] = {}  # (ordinal, stream, tag) -> (address, bytes, owner)
_retired: list[Any] = []  # outgrown workspaces: memoized launches may still point at them


def workspace_for(ordinal: int, stream: int, nbytes: int, like: Any, tag: str) -> tuple[int, Any]:
    """A zeroed device workspace of at least `nbytes` for launches on `stream`, from the caller's
    allocator (aotc.runtime.scratch), kept and shared by the kernels of one `tag` on that stream
    (fmha_decode kernels leave it zero again; other kernels get a tag of their own). Grows by
    doubling; outgrown ones are kept alive, never reused: memoized launches may point at them."""
    hit = _workspaces.get((ordinal, stream, tag))
    if hit is not None and hit[1] >= nbytes:
        return hit[0], hit[2]
    from aotc.runtime.scratch import allocate

    size = max(nbytes, 2 * hit[1]) if hit is not None else nbytes
    ptr, owner = allocate(size, ordinal, stream, like, zero=True)
    if hit is not None:
        _retired.append(hit[2])
    _workspaces[(ordinal, stream, tag)] = (ptr, size, owner)
    return ptr, owner


def workspace_arg(kernel: Kernel, args: Any, ordinal: int, handle: int, like: Any, workspace: Any = None,
                  tag: str | None = None) -> tuple[int, Any]:
    """(address, owner) of the workspace this launch needs ((0, None) when none): the caller's
    `workspace` buffer when given, else one from the caller's allocator kept per (stream, `tag`;
    default: the kernel's own), never cuMemAlloc on the launch path."""
    need = kernel.workspace_bytes(args)
    if not need:
        return 0, None
    if workspace is not None:
        return _caller_workspace(workspace, need, ordinal), workspace
    return workspace_for(ordinal, handle, need, like, tag or kernel.spec_key)


def launch_with_workspace(kernel: Kernel, args: Any, ordinal: int, handle: int, like: Any, workspace: Any = None,
                          tag: str | None = None) -> None:
    """Launch with the workspace the kernel asks for (if any), from workspace_arg."""
    kernel.launch(args, handle, workspace=workspace_arg(kernel, args, ordinal, handle, like, workspace, tag)[0])


def _caller_workspace(workspace: Any, need: int, ordinal: int) -> int:
    info = expect(tensor_info(workspace), "workspace", device=ordinal)
    if info.nbytes < need:
        raise runtime_error(BAD_TENSOR, f"argument 'workspace' holds {info.nbytes} B; this problem needs {need} B",
                            f"pass a zero-filled device buffer of at least {need} B, e.g. torch.zeros({need}, "
                            "dtype=torch.uint8, device=...)", argument="workspace")
    return info.ptr


def device_of(info: TensorInfo, name: str) -> int:
    if info.device == HOST:
        raise runtime_error(BAD_TENSOR, f"argument {name!r} is in host memory; the kernel runs on a CUDA device",
                            "move it to the GPU first, e.g. .cuda()")
    return 0 if info.device == UNKNOWN else info.device


def choose(family: str, device: Device, signature: tuple, matches: dict, problem: dict,
           params: dict | None) -> Kernel:
    """The kernel of explicit params, or of the stored params of `family` containing `matches` that
    the device's `aotc tune` table picks for the problem's bucket (aotc.runtime.tuned), else that
    select() prefers for `problem`; memoized per problem signature."""
    if params is not None:
        return get_kernel(family, params, device=device.ordinal)
    key = (family, device.ordinal, signature)
    hit = _choices.get(key)
    if hit is not None and hit[0] == registry._generation:
        return hit[1]
    picked, found = choice(family, device, matches, problem)
    if found is None:  # recalled: the lookup record of these params (written below) loads it
        kernel = get_kernel(family, picked, device=device.ordinal)
    else:
        kernel = registry.kernel_for(found, device)
        registry.remember_found(family, picked, device, found)
    if len(_choices) >= CHOICES_LIMIT:
        _choices.clear()
    _choices[key] = (registry._generation, kernel)
    return kernel


def choice(family: str, device: Device, matches: dict, problem: dict) -> tuple[dict, Found | None]:
    """(the params, in JSON form, of the stored kernel choose() uses; what the search found, None when
    recalled). Under the default sources a current record of an earlier process's search
    (aotc.runtime.recall.recall_choices) decides with the tune table and tile scores it kept;
    otherwise the stored kernels are listed, the choice made as select() makes it, and what the
    search read is recorded."""
    default = registry._default_sources()
    recalled = recall_choices(family, device) if default else None
    if recalled is not None:
        picked = pick(*recalled, matches, problem, device.sm_count)
        if picked is not None:
            return picked, None
    from aotc.runtime.lookup import listing_probes, stored_candidates  # a search: no current record

    stored = stored_candidates(family, device)
    candidates = [f for f in stored if all(f.params.get(k) == v for k, v in matches.items())]
    if not candidates:
        want = ", ".join(f"{k}={v}" for k, v in matches.items())
        raise runtime_error(NO_KERNEL, f"no stored {family} kernel with {want} runs on {device.label}",
                            f"build one: aotc build --arch {_default_target(device)} --filter {family}",
                            family=family, **{k: str(v) for k, v in matches.items()})
    from aotc.families import get_family
    from aotc.runtime.tile_select import best  # only when choosing: explicit params never load the heuristic
    from aotc.runtime.tuned import stored_table, table_key_for, tuned_choice

    found = tuned_choice(family, device, stored, matches, problem) or best(candidates, problem, device.sm_count)
    if default:
        entries = [{"params": f.params, "spec_key": f.spec_key, "tile": get_family(f.family).tile_of(f.params)}
                   for f in stored]  # JSON makes the tuples lists, as json_form does
        remember_choices(family, device, entries, stored_table(family, device, stored),
                         listing_probes(table_key_for(family, device, stored)))
    return json_form(found.params), found


def pick(entries: list[dict], table: dict, matches: dict, problem: dict, sm_count: int) -> dict | None:
    """choice() from a record: the candidates containing `matches` (in the sources' order), the one
    the tune table names for the problem's bucket, else the first of the lowest tile score (as
    tile_select.best). None when no candidate matches (the search then says why)."""
    candidates = [e for e in entries if all(e["params"].get(k) == v for k, v in matches.items())]
    if not candidates:
        return None
    if table:
        from aotc.runtime.tuned import bucket

        chosen = table.get(bucket(matches, problem))
        hit = next((e for e in candidates if e["spec_key"] == chosen), None)
        if hit is not None:
            return hit["params"]
    from aotc.runtime.tile_score import score

    return min(candidates, key=lambda e: score(e["tile"], problem, sm_count))["params"]


def json_form(params: dict) -> dict:
    """Params as a record holds them (tuples as lists): what choose() passes to get_kernel either way,
    so a recalled choice and a searched one name the same lookup record."""
    return json.loads(json.dumps(params))


def _default_target(device: Device) -> str:
    targets = device.runnable_targets()
    return targets[0] if targets else f"sm{device.sm}"


def last_dim_contiguous(info: TensorInfo, name: str) -> None:
    if info.strides and info.strides[-1] != 1:
        raise runtime_error(BAD_TENSOR, f"argument {name!r} has stride {info.strides[-1]} in its last dimension "
                            f"(shape {info.shape}); the kernel needs it contiguous (stride 1)",
                            "pass .contiguous()", argument=name)
