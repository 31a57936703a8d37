"""Read what a cubin is built for (SM number and a/f variant), its kernel symbols and static SMEM,
straight from the ELF bytes. Runtime-safe: stdlib only, pure Python, no CUDA, no subprocess; the
runtime calls it to refuse a wrong-arch cubin before handing it to the driver.
"""

from __future__ import annotations

import re
import struct

from aotc.diagnostics import AotcError, Diagnostic

EM_CUDA = 190
_ELFOSABI_CUDA = 0x41
# nvcc 13.x writes ELF ABI version 8 (e_flags byte 1 = SM). Older layouts are refused, not guessed.
_SUPPORTED_ABI_VERSIONS = (8,)
_SHT_SYMTAB = 2
_SHT_NOTE = 7
_SHT_NV_COMPAT = 0x70000086
_STT_FUNC = 2
# .nv.compat attribute 0x09 is 1 for arch-specific (`a`) builds, 0 for `f` and plain builds
# (observed for sm_90a/100a/103a/110a/120a/121a vs sm_90/100/100f/120/120f/121f, see docs/verify.md).
_COMPAT_ARCH_SPECIFIC = 0x09
_TKINFO_ARCH = re.compile(rb"-arch sm_(\d+)([af]?)\b")
# On sm_90 and newer the per-kernel .nv.shared section includes the 1 KiB system reservation that
# the driver does not count as the kernel's static SMEM (measured on H100, docs/verify.md).
_RESERVED_SMEM_SINCE_SM = 90
_RESERVED_SMEM_DEFAULT = 1024


class Section(tuple):
    """(name, type, offset, size, link) of one ELF section header. A tuple subclass with named fields
    rather than a dataclass: this module is imported by serving processes, where creating a dataclass
    costs milliseconds."""

    __slots__ = ()

    def __new__(cls, name: str, type: int, offset: int, size: int, link: int) -> Section:  # noqa: PYI034 - a tuple subclass, like a NamedTuple
        return tuple.__new__(cls, (name, type, offset, size, link))

    name = property(lambda self: self[0])
    type = property(lambda self: self[1])
    offset = property(lambda self: self[2])
    size = property(lambda self: self[3])
    link = property(lambda self: self[4])

    def __getnewargs__(self) -> tuple:  # pickle/copy: __new__ takes the fields, not one tuple
        return tuple(self)

    def __repr__(self) -> str:
        return f"Section(name={self[0]!r}, type={self[1]}, offset={self[2]}, size={self[3]}, link={self[4]})"


def _fail(message: str, **details: object) -> AotcError:
    return AotcError(
        Diagnostic(
            "AOTC-ELF-001",
            message,
            fix="rebuild the kernel (aotc build) or delete the cache entry; a cubin must come whole from nvcc",
            details=dict(details),
        )
    )


def _unpack(fmt: str, data: bytes, offset: int) -> tuple:
    if offset < 0 or offset + struct.calcsize(fmt) > len(data):
        raise _fail(
            f"cubin is truncated: needs {offset + struct.calcsize(fmt)} bytes, has {len(data)}",
            size=len(data),
        )
    return struct.unpack_from(fmt, data, offset)


def _check_header(data: bytes, cuda: bool = True) -> None:
    if data[:4] != b"\x7fELF":
        raise _fail(f"not an ELF file ({len(data)} bytes, starts with {bytes(data[:4])!r})", size=len(data))
    if len(data) < 64:
        raise _fail(f"cubin is truncated: {len(data)} bytes, an ELF header alone needs 64", size=len(data))
    if data[4] != 2 or data[5] != 1:
        raise _fail(f"not a 64-bit little-endian ELF (class {data[4]}, data {data[5]})")
    if not cuda:
        return
    (machine,) = _unpack("<H", data, 18)
    if machine != EM_CUDA or data[7] != _ELFOSABI_CUDA:
        raise _fail(f"ELF is not a CUDA cubin (e_machine {machine}, expected {EM_CUDA}; OS ABI {data[7]:#x})")
    if data[8] not in _SUPPORTED_ABI_VERSIONS:
        raise _fail(
            f"cubin ELF ABI version {data[8]} is not supported (expected one of {_SUPPORTED_ABI_VERSIONS}); "
            "it was built by an nvcc older than 13.0",
            abi_version=data[8],
        )


def sections(data: bytes, cuda: bool = True) -> list[Section]:
    """All section headers with their names; raises AOTC-ELF-001 on malformed or truncated data.
    cuda=False reads any 64-bit little-endian ELF (e.g. a host helper .so)."""
    _check_header(data, cuda)
    (shoff,) = _unpack("<Q", data, 0x28)
    shentsize, shnum, shstrndx = _unpack("<HHH", data, 0x3A)
    if shentsize < 64 or shstrndx >= shnum:
        raise _fail(f"bad section table (entry size {shentsize}, {shnum} sections, names at {shstrndx})")
    raw = [_unpack("<IIQQQQII", data, shoff + i * shentsize) for i in range(shnum)]
    str_off, str_size = raw[shstrndx][4], raw[shstrndx][5]
    if str_off + str_size > len(data):
        raise _fail(f"cubin is truncated: section names end at {str_off + str_size}, file has {len(data)} bytes")
    result = []
    for name_off, sh_type, _flags, _addr, offset, size, link, _info in raw:
        end = data.find(b"\0", str_off + name_off, str_off + str_size)
        name = data[str_off + name_off : end if end >= 0 else str_off + str_size].decode("ascii", "replace")
        if sh_type != 8 and offset + size > len(data):  # 8 = SHT_NOBITS: no file bytes
            raise _fail(f"cubin is truncated: section {name} ends at {offset + size}, file has {len(data)} bytes")
        result.append(Section(name, sh_type, offset, size, link))
    return result


def _body(data: bytes, sec: Section) -> bytes:
    return bytes(data[sec.offset : sec.offset + sec.size])


def elf_sm(data: bytes) -> int:
    """SM number from e_flags byte 1 (0x78 = 120, 0x5a = 90)."""
    _check_header(data)
    (flags,) = _unpack("<I", data, 0x30)
    return (flags >> 8) & 0xFF


def _compat_attributes(body: bytes) -> dict[int, int]:
    """Parse .nv.compat: 4-byte records (format, attribute, u16 value); format 4 carries a u16 size
    and that many payload bytes (its value is not needed here)."""
    attrs: dict[int, int] = {}
    pos = 0
    while pos + 4 <= len(body):
        fmt, attr, value = body[pos], body[pos + 1], int.from_bytes(body[pos + 2 : pos + 4], "little")
        if fmt == 4:
            pos += 4 + value
            continue
        attrs[attr] = value & 0xFF if fmt == 2 else value
        pos += 4
    return attrs


def _tkinfo_arch(data: bytes, secs: list[Section]) -> tuple[int, str] | None:
    """(sm, variant) from the ptxas command line nvcc stores in the .note.nv.tkinfo note."""
    for sec in secs:
        if sec.name == ".note.nv.tkinfo" and sec.type == _SHT_NOTE:
            match = _TKINFO_ARCH.search(_body(data, sec))
            if match:
                return int(match.group(1)), match.group(2).decode()
    return None


def cubin_target(data: bytes) -> tuple[int, str]:
    """(sm, variant) a cubin was built for: variant "a" (arch-specific), "f" (family) or "" (plain).

    SM comes from e_flags. The variant comes from the ptxas command line in .note.nv.tkinfo when
    present; otherwise from .nv.compat attribute 0x09 ("a" or not), in which case an `f` build reads
    as plain "" (they run on the same devices). Disagreeing sources are refused, not guessed.
    """
    secs = sections(data)
    sm = elf_sm(data)
    compat = next((s for s in secs if s.type == _SHT_NV_COMPAT or s.name == ".nv.compat"), None)
    compat_a = None
    if compat is not None:
        attrs = _compat_attributes(_body(data, compat))
        if _COMPAT_ARCH_SPECIFIC in attrs:
            compat_a = attrs[_COMPAT_ARCH_SPECIFIC] == 1
    tk = _tkinfo_arch(data, secs)
    if tk is not None:
        tk_sm, variant = tk
        if tk_sm != sm:
            raise _fail(f"cubin says SM {sm} in e_flags but was assembled with -arch sm_{tk_sm}{variant}")
        if compat_a is not None and compat_a != (variant == "a"):
            raise _fail(
                f"cubin target is ambiguous: ptxas ran with -arch sm_{tk_sm}{variant} but .nv.compat "
                f"marks it {'arch-specific' if compat_a else 'not arch-specific'}"
            )
        return sm, variant
    return sm, "a" if compat_a else ""


def _symbols(data: bytes, secs: list[Section]) -> list[tuple[str, int, int, int]]:
    """(name, info, section index, value) of every .symtab entry."""
    symtab = next((s for s in secs if s.type == _SHT_SYMTAB), None)
    if symtab is None:
        return []
    strtab = secs[symtab.link]
    result = []
    for off in range(symtab.offset, symtab.offset + symtab.size - 23, 24):
        name_off, info, _other, shndx, value, _size = _unpack("<IBBHQQ", data, off)
        start = strtab.offset + name_off
        end = data.find(b"\0", start, strtab.offset + strtab.size)
        result.append((data[start:end].decode("ascii", "replace"), info, shndx, value))
    return result


def kernel_symbols(data: bytes) -> list[str]:
    """Names of the functions defined in .text.* sections (kernels and device functions)."""
    secs = sections(data)
    names = []
    for name, info, shndx, _value in _symbols(data, secs):
        if info & 0xF == _STT_FUNC and 0 < shndx < len(secs) and secs[shndx].name.startswith(".text."):
            names.append(name)
    return names


def reserved_smem_bytes(data: bytes) -> int:
    """System-reserved SMEM included in each .nv.shared.<kernel> section (0 before sm_90)."""
    secs = sections(data)
    if elf_sm(data) < _RESERVED_SMEM_SINCE_SM:
        return 0
    for name, _info, _shndx, value in _symbols(data, secs):
        if name == ".nv.reservedSmem.cap":
            return int(value)
    return _RESERVED_SMEM_DEFAULT


def kernel_smem_static(data: bytes, name: str) -> int:
    """Static SMEM of kernel `name` as the driver counts it (CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES):
    the .nv.shared.<name> section size minus the system reservation it includes on sm_90+."""
    secs = sections(data)
    if name not in kernel_symbols(data):
        raise AotcError(
            Diagnostic(
                "AOTC-ELF-002",
                f"kernel {name!r} is not in this cubin (it defines: {', '.join(kernel_symbols(data)) or 'none'})",
                fix="check the entry point name the template declares (extern \"C\" aotc_kernel)",
            )
        )
    sec = next((s for s in secs if s.name == f".nv.shared.{name}"), None)
    if sec is None:
        return 0
    return max(0, sec.size - reserved_smem_bytes(data))


_SHT_GNU_VERNEED = 0x6FFFFFFE


def version_needs(data: bytes) -> dict[str, list[str]]:
    """Symbol versions a host shared object needs, per library, from its .gnu.version_r section:
    {"libc.so.6": ["GLIBC_2.2.5", "GLIBC_2.34"], ...}. What decides the oldest glibc it loads on."""
    secs = sections(data, cuda=False)
    needs: dict[str, list[str]] = {}
    for sec in secs:
        if sec.type != _SHT_GNU_VERNEED or sec.link >= len(secs):
            continue
        strtab = secs[sec.link]

        def name(off: int, strtab: Section = strtab) -> str:
            start = strtab.offset + off
            end = data.find(b"\0", start, strtab.offset + strtab.size)
            return data[start : end if end >= 0 else strtab.offset + strtab.size].decode("ascii", "replace")

        pos, end = sec.offset, sec.offset + sec.size
        while pos < end:  # Elf64_Verneed records, each with vn_cnt Elf64_Vernaux records
            _version, count, file_off, aux, nxt = _unpack("<HHIII", data, pos)
            versions = needs.setdefault(name(file_off), [])
            aux_pos = pos + aux
            for _ in range(count):
                _hash, _flags, _other, name_off, aux_next = _unpack("<IHHII", data, aux_pos)
                versions.append(name(name_off))
                if not aux_next:
                    break
                aux_pos += aux_next
            if not nxt:
                break
            pos += nxt
    return {lib: sorted(set(v)) for lib, v in needs.items()}
