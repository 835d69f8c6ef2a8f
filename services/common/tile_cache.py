"""The vector tiles one app served last, kept in the app's memory (AppState.tile_cache)."""

from collections import OrderedDict


class TileCache:
    """The tiles one app served last, by (layer, z, x, y), each with the layer version it was built from.

    A tile is only ever served from here after the database has said, in the same statement that would
    otherwise build it, that the layer is still at that version: a refresh that changes the layer makes
    every cached tile of it a miss. Bounded by bytes, least recently used first out.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str, int, int, int], tuple[int, bytes]] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple[str, str, int, int, int]) -> tuple[int, bytes] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple[str, str, int, int, int], version: int, data: bytes) -> None:
        if self.max_bytes <= 0 or len(data) > self.max_bytes // 16:
            return  # a few huge low-zoom tiles must not push out everything else
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= len(old[1])
        self._entries[key] = (version, data)
        self._bytes += len(data)
        while self._bytes > self.max_bytes:
            _key, (_version, evicted) = self._entries.popitem(last=False)
            self._bytes -= len(evicted)

    def __len__(self) -> int:
        return len(self._entries)
