"""A hostile corpus grown from real third-party adapter files: each one truncated at every section, its
header length, JSON, dtypes, shapes and data offsets made to lie, keys duplicated, headers made giant,
tensor data filled with NaN or infinity. Deterministic: the same sources give the same bytes.

Every :class:`Mutant` says what reading it must do: ``refuse`` (one clear line holding one of ``words``),
``same`` (whatever the untouched source does: read, or refused), or ``either`` (refused clearly, or read).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from library.formats.header import DTYPE_SIZES, MAX_DIMS, MAX_HEADER_BYTES, MAX_TENSORS

CONFIG_SUFFIX = ".adapter_config.json"
INFINITY = {"F64": struct.pack("<d", math.inf), "F32": struct.pack("<f", math.inf), "F16": b"\x00\x7c",
            "BF16": b"\x80\x7f"}
SAME_SIZE_INT = {"F64": "I64", "F32": "I32", "F16": "I16", "BF16": "I16"}
OTHER_SIZE = {"F64": "F32", "F32": "F16", "F16": "F32", "BF16": "F32"}


@dataclass(frozen=True)
class Mutant:
    name: str  # file name in the corpus
    data: bytes
    expect: str  # refuse | same | either
    source: str  # the real file it came from (its name)
    words: tuple[str, ...] = ()  # refuse: the message holds one of these (lower case)
    config: bytes | None = None  # a PEFT adapter_config.json to lay beside it


@dataclass(frozen=True)
class Parsed:
    """A safetensors file cut into its three sections."""

    raw: bytes
    length: int
    header: dict[str, Any]  # in file order, __metadata__ included
    data: bytes

    @classmethod
    def of(cls, raw: bytes) -> Parsed:
        length = int.from_bytes(raw[:8], "little")
        return cls(raw, length, json.loads(raw[8:8 + length]), raw[8 + length:])

    def tensors(self) -> list[tuple[str, dict[str, Any]]]:
        """(key, entry) of every tensor, by position in the data."""
        items = [(k, v) for k, v in self.header.items() if k != "__metadata__"]
        return sorted(items, key=lambda item: tuple(item[1]["data_offsets"]))

    def largest(self) -> tuple[str, dict[str, Any]]:
        return max(self.tensors(), key=lambda item: item[1]["data_offsets"][1] - item[1]["data_offsets"][0])


def pack(header: dict[str, Any] | bytes, data: bytes, length: int | None = None, pad: int = 0) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    text += b" " * pad
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def _edited(parsed: Parsed, key: str, **changes: Any) -> dict[str, Any]:
    header = json.loads(json.dumps(parsed.header))
    header[key].update(changes)
    return header


def _renamed(parsed: Parsed, old: str, new: str) -> dict[str, Any]:
    return {new if k == old else k: v for k, v in parsed.header.items()}


def _filled(parsed: Parsed, key: str, pattern: bytes) -> bytes:
    begin, end = parsed.header[key]["data_offsets"]
    block = (pattern * ((end - begin) // len(pattern) + 1))[: end - begin]
    return parsed.data[:begin] + block + parsed.data[end:]


Recipe = Callable[[Parsed], tuple[bytes, str, tuple[str, ...]]]


def _recipes(parsed: Parsed) -> Iterator[tuple[str, Recipe]]:
    """(mutation name, recipe) for one parsed source; a recipe returns (bytes, expect, words)."""
    raw, length, data = parsed.raw, parsed.length, parsed.data
    first_key, first = parsed.tensors()[0]
    big_key, big = parsed.largest()
    float_key = next((k for k, v in parsed.tensors() if v["dtype"] in INFINITY and v["data_offsets"][1]
                      > v["data_offsets"][0]), big_key)
    dtype = big["dtype"]
    text = json.dumps(parsed.header, separators=(",", ":"))
    truncated = ("truncated",)
    json_words = ("json",)

    # truncation at every section
    yield "cut-in-length", lambda p: (raw[:4], "refuse", truncated)
    yield "cut-after-length", lambda p: (raw[:8], "refuse", truncated)
    yield "cut-in-json", lambda p: (raw[: 8 + length // 2], "refuse", truncated)
    yield "cut-json-end", lambda p: (raw[: 8 + length - 1], "refuse", truncated)
    yield "cut-before-data", lambda p: (raw[: 8 + length], "refuse", truncated)
    first_middle = 8 + length + (first["data_offsets"][0] + first["data_offsets"][1]) // 2
    yield "cut-in-first-tensor", lambda p: (raw[:first_middle], "refuse", truncated)
    yield "cut-in-data", lambda p: (raw[: 8 + length + len(data) // 2], "refuse", truncated)
    yield "cut-last-byte", lambda p: (raw[:-1], "refuse", truncated)
    # the header length lies
    yield "length-too-big", lambda p: (pack(text.encode(), data, length=len(text) + 8), "refuse", json_words)
    yield "length-past-end", lambda p: (pack(text.encode(), data, length=len(raw)), "refuse", truncated)
    yield "length-too-small", lambda p: (pack(text.encode(), data, length=len(text) - 1), "refuse", json_words)
    yield "length-half", lambda p: (pack(text.encode(), data, length=len(text) // 2), "refuse", json_words)
    yield "length-zero", lambda p: (pack(text.encode(), data, length=0), "refuse", json_words)
    yield "length-over-limit", lambda p: (pack(text.encode(), data, length=MAX_HEADER_BYTES + 1), "refuse",
                                          ("limit",))
    yield "length-2-63", lambda p: (pack(text.encode(), data, length=2**63), "refuse", ("limit",))
    # what the specification allows reads as the source does
    yield "padded-header", lambda p: (pack(text.encode(), data, pad=7), "same", ())
    yield "keys-reordered", lambda p: (pack(dict(reversed(list(p.header.items()))), data), "same", ())
    # dtypes lie
    yield "dtype-other-size", lambda p: (pack(_edited(p, big_key, dtype=OTHER_SIZE.get(dtype, "F64")), data),
                                         "refuse", ("bytes",))
    yield "dtype-unknown", lambda p: (pack(_edited(p, big_key, dtype="F128"), data), "refuse", ("dtype",))
    yield "dtype-fp8", lambda p: (pack(_edited(p, big_key, dtype="F8_E4M3"), data), "refuse", ("dtype",))
    yield "dtype-not-text", lambda p: (pack(_edited(p, big_key, dtype=32), data), "refuse", ("dtype",))
    yield "dtype-integer", lambda p: (pack(_edited(p, big_key, dtype=SAME_SIZE_INT.get(dtype, dtype)), data),
                                      "either", ())
    # shapes lie
    shape = list(big["shape"]) or [1]
    yield "shape-doubled", lambda p: (pack(_edited(p, big_key, shape=[shape[0] * 2, *shape[1:]]), data), "refuse",
                                      ("bytes",))
    yield "shape-negative", lambda p: (pack(_edited(p, big_key, shape=[-1, *shape[1:]]), data), "refuse",
                                       ("shape",))
    yield "shape-fraction", lambda p: (pack(_edited(p, big_key, shape=[1.5]), data), "refuse", ("shape",))
    yield "shape-too-many-dims", lambda p: (pack(_edited(p, big_key, shape=[1] * (MAX_DIMS + 1)), data), "refuse",
                                            ("shape",))
    yield "shape-overflow", lambda p: (pack(_edited(p, big_key, shape=[2**39, 2**39]), data), "refuse",
                                       ("bytes",))
    yield "shape-transposed", lambda p: (pack(_edited(p, big_key, shape=shape[::-1]), data), "either", ())
    # data offsets lie
    begin, end = big["data_offsets"]
    yield "offsets-past-end", lambda p: (pack(_edited(p, big_key, data_offsets=[begin + 4, end + 4]), data),
                                         "refuse", ("truncated", "overlaps"))
    yield "offsets-negative", lambda p: (pack(_edited(p, big_key, data_offsets=[-4, end - begin - 4]), data),
                                         "refuse", ("offsets",))
    yield "offsets-reversed", lambda p: (pack(_edited(p, big_key, data_offsets=[end, begin]), data), "refuse",
                                         ("offsets",))
    yield "offsets-three", lambda p: (pack(_edited(p, big_key, data_offsets=[begin, end, end]), data), "refuse",
                                      ("offsets",))
    yield "offsets-missing", lambda p: (pack(_edited(p, big_key, data_offsets=None), data), "refuse",
                                        ("offsets",))
    if len(parsed.tensors()) > 1:
        other_key, other = next(item for item in parsed.tensors() if item[0] != big_key)
        size = other["data_offsets"][1] - other["data_offsets"][0]
        yield "offsets-overlap", lambda p: (pack(_edited(p, other_key, data_offsets=[begin, begin + size]), data),
                                            "refuse", ("overlaps",))
    shifted = json.loads(text)
    for key, entry in shifted.items():
        if key != "__metadata__":
            entry["data_offsets"] = [entry["data_offsets"][0] + 16, entry["data_offsets"][1] + 16]
    yield "offsets-gap", lambda p: (pack(shifted, b"\0" * 16 + data), "refuse", ("gaps",))
    yield "bytes-after-data", lambda p: (raw + b"\0" * 16, "refuse", ("after the last tensor",))
    # duplicate keys in the JSON header
    duplicated = "{" + json.dumps(first_key) + ":" + json.dumps(first, separators=(",", ":")) + "," + text[1:]
    yield "duplicate-tensor-key", lambda p: (pack(duplicated.encode(), data), "refuse", ("duplicate",))
    metadata_twice = '{"__metadata__":{"a":"b"},"__metadata__":{"c":"d"},' + text[1:]
    yield "duplicate-metadata", lambda p: (pack(metadata_twice.encode(), data), "refuse", ("duplicate",))
    # giant headers: refused by size before anything is parsed, or (under the limit) read as the source
    many = json.loads(text) | {f"lora_unet_pad_{i}.lora_down.weight": {"dtype": "F32", "shape": [0],
                                                                      "data_offsets": [len(data), len(data)]}
                               for i in range(MAX_TENSORS + 1)}
    yield "tensors-over-limit", lambda p: (pack(many, data), "refuse", ("tensors",))
    yield "deep-json", lambda p: (pack(b"[" * 50_000 + b"]" * 50_000, data), "refuse", json_words)
    big_metadata = json.loads(text)
    big_metadata["__metadata__"] = dict(big_metadata.get("__metadata__") or {}) | {"padding": "x" * 1_000_000}
    yield "metadata-1mb", lambda p: (pack(big_metadata, data), "same", ())
    yield "key-2000-chars", lambda p: (pack(_renamed(p, first_key, "lora_unet_" + "a" * 2000), data), "refuse",
                                       ("longer than",))
    # NaN and infinity in the tensor data: the file reads; applying it is refused later (check_applicable)
    yield "nan-block", lambda p: (pack(text.encode(), _filled(p, float_key, b"\xff")), "same", ())
    yield "inf-block", lambda p: (pack(text.encode(), _filled(p, float_key, INFINITY.get(
        p.header[float_key]["dtype"], b"\xff"))), "same", ())
    if len(parsed.tensors()) > 1:  # (with one tensor it is the nan-block file again)
        yield "all-nan", lambda p: (pack(text.encode(), b"\xff" * len(data)), "same", ())
    # structure and encoding
    yield "header-not-utf8", lambda p: (pack(text.encode().replace(b'"', b'"\xff', 1), data), "refuse",
                                        json_words)
    yield "header-a-list", lambda p: (pack(b"[" + text.encode() + b"]", data), "refuse", ("json object",))
    yield "metadata-not-text", lambda p: (pack(json.loads(text) | {"__metadata__": {"a": 1}}, data), "refuse",
                                          ("__metadata__",))
    yield "entry-not-object", lambda p: (pack(json.loads(text) | {first_key: "x"}, data), "refuse",
                                         ("not an object",))
    yield "no-tensors", lambda p: (pack({"__metadata__": p.header.get("__metadata__") or {}}, b""), "refuse",
                                   ("no tensors",))
    yield "key-a-path", lambda p: (pack(_renamed(p, first_key, "../../etc/passwd"), data), "refuse",
                                   ("file path",))
    yield "key-control-char", lambda p: (pack(_renamed(p, first_key, first_key + "\n"), data), "refuse",
                                         ("control",))
    # a pickle's first bytes: refused as a pickle, or (the length they spell fits the file and "{" follows)
    # as the safetensors header they then announce, whose JSON is cut wrong
    yield "pickle-magic", lambda p: (b"\x80\x02" + raw[2:], "refuse", ("pickle", "json"))
    yield "zip-magic", lambda p: (b"PK\x03\x04" + raw[4:], "refuse", ("zip",))
    yield "empty", lambda p: (b"", "refuse", ("empty",))


def mutants_of(path: Path, every: int = 1, offset: int = 0) -> Iterator[Mutant]:
    """The source itself (``same``), then every ``every``-th mutation of it (from ``offset``); PEFT sources
    carry their config along, and get three mutations of it."""
    raw = path.read_bytes()
    stem = path.name.removesuffix(".safetensors")
    config_path = path.with_name(stem + CONFIG_SUFFIX)
    config = config_path.read_bytes() if config_path.is_file() else None
    yield Mutant(f"{stem}.safetensors", raw, "same", path.name, config=config)
    parsed = Parsed.of(raw)
    for number, (name, recipe) in enumerate(_recipes(parsed)):
        if number % every != offset % every:
            continue
        data, expect, words = recipe(parsed)
        yield Mutant(f"{stem}--{name}.safetensors", data, expect, path.name, words, config)
    if config is not None:
        yield Mutant(f"{stem}--config-cut.safetensors", raw, "refuse", path.name, ("adapter_config.json",),
                     config[: len(config) // 2])
        yield Mutant(f"{stem}--config-a-list.safetensors", raw, "refuse", path.name, ("adapter_config.json",),
                     b"[" + config + b"]")
        lied = json.loads(config) | {"r": 3, "lora_alpha": float("nan")}
        yield Mutant(f"{stem}--config-lies.safetensors", raw, "either", path.name, (),
                     json.dumps(lied).encode())


def pickled_mutants(path: Path) -> Iterator[Mutant]:
    """A pickled checkpoint under its own suffix, disguised as safetensors, cut, and behind a fake length."""
    raw = path.read_bytes()
    stem = path.name.rsplit(".", 1)[0]
    yield Mutant(path.name, raw, "refuse", path.name, ("pickled",))
    yield Mutant(f"{stem}--as.ckpt", raw, "refuse", path.name, ("pickled",))
    yield Mutant(f"{stem}--disguised.safetensors", raw, "refuse", path.name, ("pickle", "zip"))
    yield Mutant(f"{stem}--disguised-cut.safetensors", raw[: len(raw) // 3], "refuse", path.name, ("pickle", "zip"))
    yield Mutant(f"{stem}--behind-a-length.safetensors", struct.pack("<Q", len(raw)) + raw, "refuse", path.name,
                 ("truncated", "json"))


def corpus(sources: Path, whole_below: int = 1_000_000, share: int = 6) -> list[Mutant]:
    """The mutants of every real file under ``sources`` (safetensors and pickles), in a fixed order: files
    under ``whole_below`` bytes get every mutation, larger ones every ``share``-th, each a different share
    (so every mutation also meets a large file while the corpus stays a few hundred MB at most)."""
    found: list[Mutant] = []
    large = 0
    for path in sorted(sources.rglob("*")):
        if path.suffix == ".safetensors":
            if path.stat().st_size < whole_below:
                found.extend(mutants_of(path))
            else:
                found.extend(mutants_of(path, every=share, offset=large))
                large += 1
        elif path.suffix in (".bin", ".pt"):
            found.extend(pickled_mutants(path))
    return found


def write(mutants: list[Mutant], folder: Path) -> list[Path]:
    """Each mutant in its own folder (so sidecars never mix), its PEFT config beside it; returns the files."""
    paths = []
    for number, mutant in enumerate(mutants):
        home = folder / f"{number:03d}"
        home.mkdir(parents=True)
        path = home / mutant.name
        path.write_bytes(mutant.data)
        if mutant.config is not None and path.suffix == ".safetensors":
            path.with_name(path.name.removesuffix(".safetensors") + CONFIG_SUFFIX).write_bytes(mutant.config)
        paths.append(path)
    return paths


__all__ = ["DTYPE_SIZES", "Mutant", "Parsed", "corpus", "mutants_of", "pickled_mutants", "write"]
