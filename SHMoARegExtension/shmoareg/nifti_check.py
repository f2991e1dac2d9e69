"""Integrity of NIfTI files before ITK reads them.

ITK reads a ``.nii``/``.nii.gz`` cut short with the missing voxels as zeros, and a NIfTI whose magic
bytes are damaged as Analyze (origin and direction silently become zero and identity). Here a
file named like NIfTI must have a NIfTI-1 or NIfTI-2 single-file header, hold every byte its header
promises, and (gzip) decompress completely with a correct checksum.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from shmoareg.errors import InputError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_CHUNK = 1 << 22


def is_nifti_name(path: Path) -> bool:
    """Whether the file name says NIfTI."""
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _compressed(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _expected_bytes(header: bytes, path: Path, role: str) -> int:
    """Header plus voxel bytes promised by a NIfTI-1 or NIfTI-2 header (either byte order)."""
    for order in ("<", ">"):
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            if header[344:348] != b"n+1\x00":
                break
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            return max(offset, 352) + _voxels(dims) * bitpix // 8
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            if header[4:8] != b"n+2\x00":
                break
            dims = struct.unpack(order + "8q", header[16:80])
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            offset = struct.unpack(order + "q", header[168:176])[0]
            return max(offset, 544) + _voxels(dims) * bitpix // 8
    raise InputError(f"cannot read {role} file {path}: it is named like NIfTI but has no valid NIfTI header "
                     "(damaged, or another format); copy it again or give it its real extension")


def _gzip_contents(path: Path) -> tuple[bytes, int]:
    """The first 544 bytes and the length of a gzip file's contents, every member inflated by zlib to its checksum
    (zero padding after a member allowed, as ``gzip`` allows it). zlib inflates ``_CHUNK`` bytes per call without
    the GIL: a handful of calls, where ``gzip``'s reader took hundreds and starved beside an import of torch."""
    data, header, length = path.read_bytes(), b"", 0
    while data:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        while data and not inflater.eof:
            piece = inflater.decompress(data, _CHUNK)
            header += piece[:max(0, 544 - len(header))]
            length += len(piece)
            data = inflater.unconsumed_tail
        if not inflater.eof:
            raise EOFError("the compressed stream ends before its end marker")
        data = inflater.unused_data.lstrip(b"\x00")
    return header, length


def _voxels(dims: tuple[int, ...]) -> int:
    count = 1
    for size in dims[1:1 + max(0, min(dims[0], 7))]:
        count *= max(int(size), 1)
    return count


def check_nifti(path: Path, role: str) -> None:
    """Raise :class:`InputError` when a NIfTI file is damaged, cut short or not NIfTI (see module notes)."""
    try:
        if _compressed(path):  # a gzip stream must be read to its checksum
            header, length = _gzip_contents(path)
        else:  # its size says it all
            with open(path, "rb") as stream:
                header = stream.read(544)
            length = path.stat().st_size
        expected = _expected_bytes(header, path, role)
    except (EOFError, zlib.error) as error:
        raise InputError(f"cannot read {role} file {path}: its compressed data is cut short or corrupt "
                         f"({error}); copy the file again") from None
    if length < expected:
        raise InputError(f"cannot read {role} file {path}: it is cut short, holding {length} of the {expected} "
                         "bytes its header promises; copy the file again")
