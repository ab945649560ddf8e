"""The window store: compressed windows in a few large shard files with a Parquet index (see ``format.py``).

Build with :func:`build_store`, read with :class:`WindowStore` (the same reading interface as the memory-mapped
:class:`~mvmammo.data.cache.WindowCache`), load batches into pinned memory with :class:`~.loader.StoreLoader`.
"""
from mvmammo.data.store.build import build_store
from mvmammo.data.store.format import heat_factor_for, is_store
from mvmammo.data.store.reader import WindowStore

__all__ = ["WindowStore", "build_store", "heat_factor_for", "is_store"]
