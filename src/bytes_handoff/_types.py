"""Type aliases shared by the library's modules."""

from __future__ import annotations

from typing import TypeAlias

#: What the write side accepts and the read side hands out: any contiguous
#: byte buffer. The write side keeps a reference, it does not copy: a chunk
#: handed to a ``WriteHandoff`` belongs to it until written.
BytesLike: TypeAlias = bytes | bytearray | memoryview
