"""Lists carried inside the job graph (a wave's files, partitions and file records), kept small.

Beam pickles every DoFn and closure into the graph with bz2 at level 9, about 3 MB/s. A wave's
file list is ~200 bytes per file, so a 20,000-file wave cost ~1.5 s of launcher CPU before any
file was read. The paths repeat long prefixes: zlib at level 1 shrinks them ~15x first, in
milliseconds, and bz2 then has little left to do.

A local worker unpickles a step's DoFn, pickles it again with its windowing and unpickles that
(Beam's bundle_processor); a packed list keeps its blob, so that costs two bz2 passes over the
blob, not two compressions and three decodings of the whole list, and the list is decoded only
by the step that reads it.
"""
import pickle
import zlib
from typing import Any, Iterable, Iterator, Sequence


class PackedList(Sequence):
    """A read-only list that pickles as one zlib-compressed blob, made once and kept; an
    unpickled one decodes the blob on first use."""

    __slots__ = ('_items', '_blob')

    def __init__(self, items: Iterable[Any] = ()):
        self._items = tuple(items)
        self._blob = None

    def _all(self) -> tuple:
        if self._items is None:
            self._items = pickle.loads(zlib.decompress(self._blob))
        return self._items

    def __len__(self) -> int:
        return len(self._all())

    def __getitem__(self, index):
        return self._all()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._all())

    def __eq__(self, other) -> bool:
        return isinstance(other, PackedList) and self._all() == other._all()

    def __repr__(self) -> str:
        return f'PackedList({len(self)} items)'

    def __reduce__(self):
        if self._blob is None:
            self._blob = zlib.compress(pickle.dumps(self._items,
                                                    protocol=pickle.HIGHEST_PROTOCOL), 1)
        return _unpack, (self._blob,)


def _unpack(blob: bytes) -> PackedList:
    packed = PackedList.__new__(PackedList)
    packed._items, packed._blob = None, blob
    return packed
