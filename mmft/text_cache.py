"""`FrozenTextCache`: a frozen text tower's output per distinct tokenised text, bounded by the bytes it holds.

An entry is one padded row of token states, `(tokens, hidden)` in the tower's output dtype, kept on the device the
tower ran on (GPU memory on a GPU). It costs `tokens x hidden x dtype size` bytes: 64 tokens of BERT-base (768) in
fp32 are 192 KiB, so 200,000 distinct questions would be 39 GB (36.6 GiB). The cache holds at most `max_bytes` of
them and evicts the least recently used entry first; an entry larger than the whole bound is never stored.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

MIB = 2**20


def tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


class FrozenTextCache:
    """Least-recently-used map from a row key (bytes) to a tensor, bounded by the tensors' total size in bytes."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"the frozen-text cache bound must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0
        self._entries: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def get(self, key: bytes) -> torch.Tensor | None:
        """The stored tensor (now the most recently used), or None."""
        tensor = self._entries.get(key)
        if tensor is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return tensor

    def put(self, key: bytes, tensor: torch.Tensor) -> None:
        """Store `tensor` (give it its own storage: a view would keep its whole batch alive), evicting the least
        recently used entries until the total fits."""
        size = tensor_bytes(tensor)
        if size > self.max_bytes:
            return
        if key in self._entries:
            self.bytes -= tensor_bytes(self._entries.pop(key))
        self._entries[key] = tensor
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= tensor_bytes(evicted)
            self.evictions += 1

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


__all__ = ["MIB", "FrozenTextCache", "tensor_bytes"]
