"""A small in-process cache of encoded trace results, validated by their sha256 on every request.

A stored result never changes without its sha256 changing (``store_trace_result`` sets both), so a
hit needs one indexed single-row query instead of reading and encoding tens of MB.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Optional


class ResultCache:
    """LRU of ``(trace_id, sha256) -> bytes`` holding at most ``max_bytes`` in total."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, trace_id: str, sha256: str) -> Optional[bytes]:
        with self._lock:
            value = self._items.get((trace_id, sha256))
            if value is not None:
                self._items.move_to_end((trace_id, sha256))
            return value

    def put(self, trace_id: str, sha256: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            for key in [k for k in self._items if k[0] == trace_id]:  # older versions of this trace
                self._size -= len(self._items.pop(key))
            self._items[(trace_id, sha256)] = value
            self._size += len(value)
            while self._size > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._size -= len(old)
