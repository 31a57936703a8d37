"""Absolute install prefixes -> role tags (`<templates>`, `<cutlass0>`, `<cuda>`, `<flashinfer>`...),
so keys, flags and recorded header paths do not depend on where things are installed, and back
again to find a recorded header in this build. Longest prefix first: a root inside another wins.
"""

from __future__ import annotations

from collections.abc import Iterable


class PathRoles:
    def __init__(self, roots: Iterable[tuple[str, str]]):
        pairs = [(tag, path) for tag, path in roots if path and path.startswith("/")]
        self.pairs = sorted(pairs, key=lambda p: -len(p[1]))

    def portable(self, text: str) -> str:
        """Every occurrence of a root in text (a path, a flag like -I/root/include) -> its tag."""
        for tag, path in self.pairs:
            text = text.replace(path, tag)
        return text

    def real_text(self, text: str) -> str:
        """Every tag in text (a command line) -> where its root is in this build: `portable` undone."""
        for tag, root in self.pairs:
            text = text.replace(tag, root)
        return text

    def real(self, path: str) -> str:
        """A tagged path -> where it is in this build; an untagged path unchanged."""
        for tag, root in self.pairs:
            if path.startswith(tag):
                return root + path[len(tag):]
        return path
