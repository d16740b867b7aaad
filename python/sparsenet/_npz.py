"""A defensive reader for ``.npz`` files.

``numpy.load`` allocates whatever an array header declares before reading the
data, so a 100-byte file can ask for terabytes. This reader parses each
member's header first, refuses object arrays (pickles), checks the declared
size against the member's real size and a byte budget, and only then reads.
"""

from __future__ import annotations

import os
import threading
import tokenize
import zipfile
import zlib
from math import prod
from typing import Iterable

import numpy as np

from .errors import FormatError

#: Default cap on the bytes one load may read out of a file (16 GiB).
DEFAULT_MAX_BYTES = 16 << 30
# Deflate cannot expand data by more than about 1032:1.
_MAX_DEFLATE_RATIO = 1100

# NumPy parses .npy headers with ast.literal_eval, and CPython 3.11's AST
# constructor keeps its recursion depth per interpreter, not per thread: two
# threads loading at once can fail with "SystemError: AST constructor recursion
# depth mismatch" (python/cpython#106905; seen in tests/test_stress.py under
# ASan). One header parse at a time; the data reads stay concurrent.
_HEADER_LOCK = threading.Lock()

# tokenize.TokenError and SyntaxError: NumPy's .npy header parser lets them out
# for headers with unbalanced brackets (found by fuzzing).
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
                tokenize.TokenError, SyntaxError)


def _cpp_readable(dtype: np.dtype, shape: tuple, fortran: bool) -> bool:
    """What csrc/src/npz.cc accepts, so both loaders read the same files."""
    if dtype.byteorder == ">" or (fortran and len(shape) > 1):
        return False
    if dtype.kind == "f":
        return dtype.itemsize in (4, 8)
    if dtype.kind in "iu":
        return dtype.itemsize in (1, 2, 4, 8)
    return dtype.kind == "S"


class NpzArchive:
    """Read-only access to the arrays of an ``.npz`` file, one key at a time."""

    def __init__(self, path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES):
        self.path = os.fspath(path)
        self.max_bytes = int(max_bytes)
        self._bytes_read = 0
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"{self.path}: no such file")
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except _READ_ERRORS as exc:
            raise FormatError(f"{self.path}: not a readable .npz (zip) file: {exc}") from None
        self._members = {}
        for info in infos:
            if info.filename.endswith(".npy"):
                self._members[info.filename[:-4]] = info

    def __enter__(self) -> "NpzArchive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def keys(self) -> list[str]:
        return list(self._members)

    def __contains__(self, key: str) -> bool:
        return key in self._members

    def read(self, key: str, kinds: Iterable[str] = "fiu", context: str = "", limit: int | None = None,
             strict: bool = False) -> np.ndarray:
        """Return the array under ``key``; ``kinds`` are the accepted dtype kinds,
        ``limit`` an optional cap on this member's size in bytes. ``strict``
        accepts what the C++ loader reads (sparsenet's own files): little-endian
        float32/64 and 8-64-bit integers, byte strings, C order."""
        where = f"{self.path}: {context + ' ' if context else ''}key '{key}'"
        info = self._members.get(key)
        if info is None:
            raise FormatError(f"{where}: missing from the file (keys: {', '.join(sorted(self._members)) or 'none'})")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise FormatError(f"{where}: unsupported zip compression method {info.compress_type}")
        if info.flag_bits & 0x1:  # zipfile would raise RuntimeError asking for a password
            raise FormatError(f"{where}: the zip member is encrypted")
        if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 4096:
            raise FormatError(f"{where}: declares {info.file_size} bytes from {info.compress_size} compressed bytes, "
                              "more than deflate can produce")
        if limit is not None and info.file_size > limit:
            raise FormatError(f"{where}: {info.file_size} bytes, more than the {limit} this key may hold")
        if self._bytes_read + info.file_size > self.max_bytes:
            raise FormatError(f"{where}: reading {info.file_size} bytes would exceed the load limit of "
                              f"{self.max_bytes} bytes (max_bytes)")
        try:
            with self._zip.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    with _HEADER_LOCK:
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
                elif version in ((2, 0), (3, 0)):
                    with _HEADER_LOCK:
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    raise FormatError(f"{where}: unsupported .npy version {version}")
                if dtype.hasobject or dtype.fields is not None or dtype.kind not in kinds:
                    raise FormatError(f"{where}: dtype {dtype} is not allowed here (object arrays and pickles "
                                      f"are refused; expected kinds {''.join(kinds)!r})")
                if strict and not _cpp_readable(dtype, shape, fortran):
                    raise FormatError(f"{where}: dtype {dtype.str}{' in Fortran order' if fortran else ''} is not "
                                      "allowed in a sparsenet file (little-endian float32/float64, integers, "
                                      "byte strings; C order)")
                if any(d < 0 for d in shape):
                    raise FormatError(f"{where}: negative dimension in shape {shape}")
                nbytes = prod(shape) * dtype.itemsize
                header_bytes = member.tell()
                if header_bytes + nbytes != info.file_size:
                    raise FormatError(f"{where}: header declares shape {shape} of {dtype} ({nbytes} bytes) "
                                      f"but the member holds {info.file_size - header_bytes} data bytes")
                data = member.read(nbytes)
        except FormatError:
            raise
        except _READ_ERRORS as exc:
            raise FormatError(f"{where}: corrupt or truncated: {exc}") from None
        if len(data) != nbytes:
            raise FormatError(f"{where}: truncated: expected {nbytes} bytes, read {len(data)}")
        self._bytes_read += info.file_size
        array = np.frombuffer(data, dtype=dtype)
        return array.reshape(shape, order="F" if fortran else "C")
