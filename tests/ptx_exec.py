"""A CPU executor for the small PTX kernels of aotc.runtime.metadata: runs the shipped PTX text
itself, thread by thread, over a sparse byte memory, so what those kernels write can be compared
with the host path without a GPU. Covers the integer subset nvcc emits for them (loads, stores,
integer arithmetic, compares, predicated branches); anything else fails loudly. Threads run one
after another, which is exact for kernels whose threads write disjoint bytes and never
synchronize (all of aotc's metadata kernels)."""

from __future__ import annotations

import re
import struct

WIDTH = {"8": 8, "16": 16, "32": 32, "64": 64}
PTX_SIZES = {"u64": 8, "s64": 8, "b64": 8, "u32": 4, "s32": 4, "b32": 4}


class Memory:
    """Sparse little-endian byte memory: regions placed at device addresses."""

    def __init__(self) -> None:
        self.regions: list[tuple[int, bytearray]] = []

    def place(self, address: int, data: bytes) -> int:
        self.regions.append((address, bytearray(data)))
        return address

    def _find(self, address: int, size: int) -> tuple[bytearray, int]:
        for base, buf in self.regions:
            if base <= address and address + size <= base + len(buf):
                return buf, address - base
        raise AssertionError(f"access of {size} B at 0x{address:x} outside every placed region")

    def read(self, address: int, size: int) -> bytes:
        buf, at = self._find(address, size)
        return bytes(buf[at:at + size])

    def write(self, address: int, data: bytes) -> None:
        buf, at = self._find(address, len(data))
        buf[at:at + len(data)] = data

    def region(self, address: int) -> bytes:
        return bytes(next(buf for base, buf in self.regions if base == address))


def _bits(kind: str) -> int:
    return WIDTH[kind[1:]]


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class Kernel:
    """One .entry of a PTX module: parameter offsets and its instruction list."""

    def __init__(self, ptx: str, entry: str):
        head = re.search(rf"\.entry {entry}\((.*?)\)\s*\{{", ptx, re.DOTALL)
        assert head, f"no .entry {entry}"
        self.params: dict[str, int] = {}
        offset = 0
        for decl in head.group(1).split(","):
            m = re.search(r"\.param\s+(?:\.align\s+(\d+)\s+)?\.(\w+)\s+(\w+)(?:\[(\d+)\])?", decl)
            assert m, decl
            align = int(m.group(1) or PTX_SIZES[m.group(2)])
            offset = -(-offset // align) * align
            self.params[m.group(3)] = offset
            offset += int(m.group(4)) if m.group(4) else PTX_SIZES[m.group(2)]
        body_start = head.end()
        body_end = ptx.index("\n}", body_start)  # nvcc closes a function body with "}" on its own line
        self.code: list[tuple] = []
        self.labels: dict[str, int] = {}
        for raw in ptx[body_start:body_end].split("\n"):
            line = raw.split("//")[0].strip()
            if not line or line.startswith((".reg", ".pragma")):
                continue
            if line.endswith(":"):
                self.labels[line[:-1]] = len(self.code)
                continue
            assert line.endswith(";"), line
            line = line[:-1]
            guard = None
            if line.startswith("@"):
                g, line = line.split(None, 1)
                guard = (g[1:].lstrip("!"), g.startswith("@!"))
            op, _, rest = line.partition(" ")
            operands = [x.strip() for x in re.split(r",(?![^{]*\})", rest)] if rest.strip() else []
            self.code.append((guard, op.split("."), operands))

    def run(self, params: bytes, memory: Memory, grid: int, block: int, max_steps: int = 1_000_000) -> None:
        """Execute every thread of a 1-D launch of grid x block threads."""
        for cta in range(grid):
            for tid in range(block):
                _Thread(self, params, memory, {"%tid.x": tid, "%ntid.x": block, "%ctaid.x": cta,
                                               "%nctaid.x": grid}).run(max_steps)


class _Thread:
    def __init__(self, kernel: Kernel, params: bytes, memory: Memory, special: dict[str, int]):
        self.k, self.params, self.mem, self.special = kernel, params, memory, special
        self.regs: dict[str, int] = {}

    # -- operands -----------------------------------------------------------------------------------
    def value(self, operand: str) -> int:
        if operand in self.special:
            return self.special[operand]
        if operand.startswith("%"):
            assert operand in self.regs, f"read of unset register {operand}"
            return self.regs[operand]
        if operand in self.k.params:
            return self.k.params[operand]  # a parameter's address in the param space
        return int(operand, 0)

    def typed(self, operand: str, kind: str) -> int:
        bits = _bits(kind)
        raw = self.value(operand) & ((1 << bits) - 1)
        return _signed(raw, bits) if kind[0] == "s" else raw

    def set(self, reg: str, value: int) -> None:
        if reg.startswith("%p"):
            self.regs[reg] = int(bool(value))
            return
        bits = 64 if reg.startswith("%rd") else 32
        self.regs[reg] = value & ((1 << bits) - 1)

    def address(self, operand: str) -> int:
        m = re.fullmatch(r"\[([%\w.]+)(?:\+(-?\d+))?\]", operand)
        assert m, operand
        return self.value(m.group(1)) + int(m.group(2) or 0)

    # -- memory -------------------------------------------------------------------------------------
    def load(self, space: str, address: int, size: int) -> bytes:
        if space == "param":
            assert 0 <= address and address + size <= len(self.params), f"param read at {address}"
            return self.params[address:address + size]
        return self.mem.read(address, size)

    # -- execution ----------------------------------------------------------------------------------
    def run(self, max_steps: int) -> None:
        pc, steps, code = 0, 0, self.k.code
        while True:
            steps += 1
            assert steps <= max_steps, "runaway loop"
            guard, parts, ops = code[pc]
            pc += 1
            if guard is not None and bool(self.regs[guard[0]]) == guard[1]:
                continue
            op = parts[0]
            if op == "ret":
                return
            if op == "bra":
                pc = self.k.labels[ops[0]]
                continue
            self.step(op, parts[1:], ops)

    def step(self, op: str, mods: list[str], ops: list[str]) -> None:
        kind = mods[-1]
        if op in ("ld", "st"):
            space = mods[0] if mods[0] in ("param", "global") else "generic"
            vec = int(mods[-2][1:]) if len(mods) > 1 and mods[-2].startswith("v") else 1
            size = _bits(kind) // 8
            if op == "ld":
                regs = ops[0].strip("{}").split(",")
                data = self.load(space, self.address(ops[1]), size * vec)
                for i, reg in enumerate(regs):
                    raw = int.from_bytes(data[i * size:(i + 1) * size], "little")
                    self.set(reg.strip(), _signed(raw, size * 8) if kind[0] == "s" else raw)
            else:
                assert space != "param", "store to the param space"
                regs = ops[1].strip("{}").split(",")
                data = b"".join((self.typed(r.strip(), kind) & ((1 << (size * 8)) - 1)).to_bytes(size, "little")
                                for r in regs)
                self.mem.write(self.address(ops[0]), data)
            return
        if op == "mov":
            self.set(ops[0], self.value(ops[1]))
        elif op == "cvta":
            self.set(ops[0], self.value(ops[1]))  # global and generic addresses are the same here
        elif op == "cvt":
            self.set(ops[0], self.typed(ops[1], mods[-1]))
        elif op == "setp":
            a, b = self.typed(ops[1], kind), self.typed(ops[2], kind)
            cmp = {"eq": a == b, "ne": a != b, "lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[mods[0]]
            self.set(ops[0], cmp)
        elif op == "selp":
            self.set(ops[0], self.typed(ops[1], kind) if self.regs[ops[3]] else self.typed(ops[2], kind))
        elif op in ("add", "sub", "max", "min", "and", "or", "xor"):
            a, b = self.typed(ops[1], kind), self.typed(ops[2], kind)
            fn = {"add": a + b, "sub": a - b, "max": max(a, b), "min": min(a, b), "and": a & b, "or": a | b,
                  "xor": a ^ b}
            self.set(ops[0], fn[op])
        elif op == "shl":
            self.set(ops[0], self.typed(ops[1], kind) << min(self.typed(ops[2], "u32"), _bits(kind)))
        elif op == "shr":
            self.set(ops[0], self.typed(ops[1], kind) >> min(self.typed(ops[2], "u32"), _bits(kind)))
        elif op == "mul":
            product = self.typed(ops[1], kind) * self.typed(ops[2], kind)
            self.set(ops[0], product)  # .lo: the register width keeps the low half; .wide: 2x the type
            assert mods[0] in ("lo", "wide"), mods
        elif op == "mad":
            assert mods[0] == "lo", mods
            self.set(ops[0], self.typed(ops[1], kind) * self.typed(ops[2], kind) + self.typed(ops[3], kind))
        else:
            raise AssertionError(f"PTX instruction {op}.{'.'.join(mods)} is not executed by this test executor")


def u32_array(values: list[int]) -> bytes:
    return struct.pack(f"<{len(values)}i", *values)
