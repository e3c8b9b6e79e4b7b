"""Lists carried inside the job graph (a wave's files, partitions and file records), kept small.

Beam pickles every DoFn and closure into the graph with bz2 at level 9, about 3 MB/s. A wave's
file list is ~200 bytes per file, so a 20,000-file wave cost ~1.5 s of launcher CPU before any
file was read. The paths repeat long prefixes: zlib at level 1 shrinks them ~15x first, in
milliseconds, and bz2 then has little left to do.
"""
import pickle
import zlib
from typing import Iterable, Iterator, Sequence, TypeVar

T = TypeVar('T')


class PackedList(Sequence[T]):
    """A read-only list that pickles as one zlib-compressed blob."""

    __slots__ = ('_items',)

    def __init__(self, items: Iterable[T] = ()):
        self._items = tuple(items)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index):
        return self._items[index]

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)

    def __eq__(self, other) -> bool:
        return isinstance(other, PackedList) and self._items == other._items

    def __repr__(self) -> str:
        return f'PackedList({len(self._items)} items)'

    def __reduce__(self):
        blob = zlib.compress(pickle.dumps(self._items, protocol=pickle.HIGHEST_PROTOCOL), 1)
        return _unpack, (blob,)


def _unpack(blob: bytes) -> PackedList:
    packed = PackedList()
    packed._items = pickle.loads(zlib.decompress(blob))
    return packed
