"""Adapters read from the catalogue, kept in memory by (id, sha256) up to a byte budget.

A repeated generation with the same adapters reads no file: the cache hands back the same
:class:`~library.lora.LoraAdapter` objects (so the fusion engine's check cache also holds).
An entry is keyed by the catalogue id *and* the file's sha256, so an adapter whose file was
replaced is read again. Least recently used entries are evicted past ``max_bytes``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from library.catalog import Catalog
from library.lora import LoraAdapter
from library.records import AdapterRecord


@dataclass
class CacheStats:
    hits: int = 0
    loads: int = 0  # files read
    evictions: int = 0
    bytes: int = 0  # held now
    entries: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "loads": self.loads, "evictions": self.evictions, "bytes": self.bytes,
                "entries": self.entries}


class AdapterCache:
    """LRU of loaded adapters; ``max_bytes`` None keeps everything (the default for one user)."""

    def __init__(self, catalog: Catalog, max_bytes: int | None = None) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise ValueError("the adapter cache budget must be >= 0 bytes")
        self.catalog = catalog
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._entries: OrderedDict[tuple[int, str], tuple[LoraAdapter, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, record: AdapterRecord) -> LoraAdapter:
        """The adapter of ``record``, from memory when its (id, sha256) is held, else read from its file."""
        key = (record.id, record.sha256)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.stats.hits += 1
                return entry[0]
        adapter = self.catalog.load_adapter(record.id)  # outside the lock: other requests go on meanwhile
        adapter.metadata["medley.sha256"] = record.sha256
        size = adapter.nbytes()
        with self._lock:
            self.stats.loads += 1
            if key not in self._entries:
                self._entries[key] = (adapter, size)
                self.stats.bytes += size
                self._evict()
            self.stats.entries = len(self._entries)
            return self._entries[key][0] if key in self._entries else adapter

    def _evict(self) -> None:
        if self.max_bytes is None:
            return
        while self._entries and self.stats.bytes > self.max_bytes:
            _, (_, size) = self._entries.popitem(last=False)
            self.stats.bytes -= size
            self.stats.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.stats.bytes = self.stats.entries = 0
