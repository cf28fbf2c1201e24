"""A safetensors header read by hand, with size checks before anything is parsed.

Layout: 8 bytes little-endian header length N, N bytes of UTF-8 JSON
({key: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}), then the
tensor data. Every bound is checked here so that ``safetensors.safe_open`` is only
ever handed a file whose header is sane.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from library.errors import AdapterFileError, PickledFileError

MAX_HEADER_BYTES = 100 * 1024 * 1024
MAX_TENSORS = 8192
MAX_DIMS = 8
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle"})
DTYPE_SIZES: dict[str, int] = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
_DRIVE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:(?!\d+:)")


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]
    file_size: int
    header_size: int


def refuse_pickled_suffix(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise PickledFileError(
            f"{path.name}: pickled checkpoints ({path.suffix}) are refused, they can run code when loaded; "
            "convert it to .safetensors"
        )


def _looks_pickled(prefix: bytes) -> str | None:
    if prefix.startswith(b"PK\x03\x04"):
        return "a zip archive (a PyTorch torch.save file)"
    if len(prefix) >= 2 and prefix[0] == 0x80 and 2 <= prefix[1] <= 5:
        return "a Python pickle"
    return None


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def check_key(name: str, key: str) -> None:
    """Tensor names are module paths: no path syntax, no control characters."""
    if not key or len(key) > 1024:
        raise AdapterFileError(f"{name}: a tensor name is empty or longer than 1024 characters")
    # a colon only as a drive ("C:") or a scheme ("file:"); cloneofsimo names modules "unet:12:down"
    if key.startswith(("/", "\\", "~")) or "/" in key or "\\" in key or ".." in key or _DRIVE.match(key):
        raise AdapterFileError(f"{name}: tensor name {key[:80]!r} looks like a file path, refused")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise AdapterFileError(f"{name}: tensor name {key[:80]!r} holds control characters, refused")


def _parse_entry(name: str, key: str, raw: object, data_size: int) -> TensorEntry:
    if not isinstance(raw, dict):
        raise AdapterFileError(f"{name}: header entry {key!r} is not an object")
    dtype, shape, offsets = raw.get("dtype"), raw.get("shape"), raw.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise AdapterFileError(f"{name}: tensor {key!r} has unsupported dtype {str(dtype)[:20]!r} "
                               f"(supported: {', '.join(DTYPE_SIZES)})")
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape)):
        raise AdapterFileError(f"{name}: tensor {key!r} has an invalid shape")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise AdapterFileError(f"{name}: tensor {key!r} has invalid data offsets")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise AdapterFileError(f"{name}: tensor {key!r} has invalid data offsets {begin}..{end}")
    if end > data_size:
        raise AdapterFileError(f"{name}: truncated: tensor {key!r} ends at byte {end} of the data but the file "
                               f"holds only {data_size} data bytes")
    if end - begin != math.prod(shape) * DTYPE_SIZES[dtype]:
        raise AdapterFileError(f"{name}: tensor {key!r} declares {end - begin} bytes for shape {shape} {dtype}")
    return TensorEntry(dtype=dtype, shape=tuple(shape), begin=begin, end=end)


def _check_coverage(name: str, tensors: dict[str, TensorEntry], data_size: int) -> None:
    position = 0
    for entry in sorted(tensors.values(), key=lambda e: (e.begin, e.end)):
        if entry.begin != position:
            raise AdapterFileError(f"{name}: tensor data overlaps or leaves gaps (at byte {entry.begin})")
        position = entry.end
    if position != data_size:
        raise AdapterFileError(f"{name}: {data_size - position} bytes after the last tensor; damaged file")


def parse_header_bytes(name: str, prefix: bytes, raw: bytes, file_size: int) -> SafetensorsHeader:
    length = int.from_bytes(prefix, "little")
    try:
        document = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise AdapterFileError(f"{name}: the safetensors header is not valid JSON ({str(error)[:80]})") from None
    if not isinstance(document, dict):
        raise AdapterFileError(f"{name}: the safetensors header is not a JSON object")
    metadata_raw = document.pop("__metadata__", None) or {}
    if not isinstance(metadata_raw, dict) or not all(isinstance(v, str) for v in metadata_raw.values()):
        raise AdapterFileError(f"{name}: the header's __metadata__ is not a map of strings")
    if len(document) > MAX_TENSORS:
        raise AdapterFileError(f"{name}: holds {len(document)} tensors, more than the {MAX_TENSORS} "
                               "a LoRA file may hold")
    if not document:
        raise AdapterFileError(f"{name}: holds no tensors")
    data_size = file_size - 8 - length
    tensors: dict[str, TensorEntry] = {}
    for key, raw_entry in document.items():
        check_key(name, key)
        tensors[key] = _parse_entry(name, key, raw_entry, data_size)
    _check_coverage(name, tensors, data_size)
    return SafetensorsHeader(tensors=tensors, metadata=dict(metadata_raw), file_size=file_size, header_size=length)


def read_header(path: Path) -> SafetensorsHeader:
    """Parse and validate the header of ``path``; raise :class:`AdapterFileError` with one clear line."""
    path = Path(path)
    name = path.name
    refuse_pickled_suffix(path)
    if not path.is_file():
        raise AdapterFileError(f"{name}: not a regular file")
    file_size = path.stat().st_size
    if file_size == 0:
        raise AdapterFileError(f"{name}: empty file (0 bytes)")
    with path.open("rb") as handle:
        start = handle.read(9)
        prefix, opening = start[:8], start[8:]
        disguise = _looks_pickled(prefix)
        # a header length whose low bytes happen to read 80 02..05 (640..1407 bytes) is no pickle when the
        # JSON it announces is there: the length fits the file and "{" follows
        plausible = len(prefix) == 8 and 8 + int.from_bytes(prefix, "little") <= file_size and opening == b"{"
        if disguise is not None and not plausible:
            raise PickledFileError(f"{name}: is {disguise}, not safetensors; refused without loading it")
        if len(prefix) < 8:
            raise AdapterFileError(f"{name}: truncated: {file_size} bytes cannot hold a safetensors header")
        length = int.from_bytes(prefix, "little")
        if length > MAX_HEADER_BYTES:
            raise AdapterFileError(f"{name}: declares a {length}-byte header, over the {MAX_HEADER_BYTES // 2**20} MB "
                                   "limit; not a LoRA file")
        if 8 + length > file_size:
            raise AdapterFileError(f"{name}: truncated: the header claims {length} bytes but the file has "
                                   f"{file_size - 8} after the length field")
        raw = opening + handle.read(max(length - len(opening), 0))
    return parse_header_bytes(name, prefix, raw[:length], file_size)
