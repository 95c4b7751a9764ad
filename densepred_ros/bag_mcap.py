"""rosbags' MCAP writer with fewer copies of each message: the same file, byte for byte.

rosbags (0.11) copies a message about five times on its way to the file: into a record
buffer, into the chunk buffer, out of it, into the chunk record, into the file buffer.
With the 2.4 MB point clouds of `densepred bag` that was about 1 ms per MB written.
`FastWriter` keeps rosbags' chunking, records and indexes (its own code does them) and
only changes where the bytes wait: a chunk holds references to the messages and is
written to the file with no further copy. test_bag_writer.py checks that both writers
produce identical files; with a rosbags whose MCAP writer lacks the internals used here,
`writer_class` returns rosbags' own Writer.
"""

from collections import defaultdict
import functools
import struct
from typing import Any, List

# op 0x05 message record: op, record length, channel id, sequence, log time, publish time
_MESSAGE = struct.Struct('<BQHIQQ')
# op 0x06 chunk record up to the compression string: op, length, start, end, size, crc
_CHUNK = struct.Struct('<BQQQQI')
_SMALL = 1 << 16


class ChunkBuffer:
    """A write-only chunk body: small writes are gathered, large ones kept by reference.

    The referenced buffers (serialized messages) must not change until the chunk is written.
    """

    def __init__(self) -> None:
        """Start empty."""
        self.parts: List[Any] = []
        self._small = bytearray()
        self._size = 0

    def write(self, data: Any) -> int:
        """Append bytes; return their length."""
        size = memoryview(data).nbytes
        if size >= _SMALL:
            if self._small:
                self.parts.append(bytes(self._small))
                self._small.clear()
            self.parts.append(data)
        else:
            self._small += data
        self._size += size
        return size

    def tell(self) -> int:
        """Return the number of bytes written."""
        return self._size

    def buffers(self) -> List[Any]:
        """Return the chunk body as a list of buffers, in order."""
        if self._small:
            self.parts.append(bytes(self._small))
            self._small.clear()
        return self.parts

    def getvalue(self) -> bytes:
        """Return the chunk body as one bytes object."""
        return b''.join(self.buffers())


@functools.lru_cache(maxsize=1)
def writer_class() -> Any:
    """Return a rosbags Writer class whose MCAP storage copies less (or rosbags' own)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2 import storage_mcap as mcap
    needed = ('PendingChunk', 'write_record', 'write_uint16', 'write_uint32', 'write_uint64',
              'write_string')
    if not all(hasattr(mcap, name) for name in needed) or not all(
            hasattr(mcap.McapWriter, name) for name in ('close_chunk', 'write')):
        return Writer

    class FastMcapWriter(mcap.McapWriter):
        """rosbags' McapWriter, chunks held as `ChunkBuffer`."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.chunk = mcap.PendingChunk(2**63 - 1, 0, ChunkBuffer(), defaultdict(list))

        def write(self, connection: Any, timestamp: int, data: Any) -> None:
            self.message_start_time = min(timestamp, self.message_start_time)
            self.message_end_time = max(timestamp, self.message_end_time)
            self.channel_stats[connection.id] += 1
            chunk = self.chunk
            chunk.message_start_time = min(timestamp, chunk.message_start_time)
            chunk.message_end_time = max(timestamp, chunk.message_end_time)
            chunk.msgs[connection.id].append((timestamp, chunk.bio.tell()))
            size = memoryview(data).nbytes
            chunk.bio.write(_MESSAGE.pack(0x05, 22 + size, connection.id, 0, timestamp,
                                          timestamp))
            chunk.bio.write(data)
            if chunk.bio.tell() > 2**20:
                self.close_chunk()

        def close_chunk(self) -> None:
            chunk = self.chunk
            if self.compression:
                super().close_chunk()
            else:
                self._close_plain_chunk(chunk)
            self.chunk = mcap.PendingChunk(2**63 - 1, 0, ChunkBuffer(), defaultdict(list))

        def _close_plain_chunk(self, chunk: Any) -> None:
            """Write the chunk and its indexes as rosbags' close_chunk does, uncompressed."""
            from io import BytesIO
            size = chunk.bio.tell()
            chunk_start = self.bio.tell()
            self.bio.write(_CHUNK.pack(0x06, 8 * 3 + 4 + 4 + 8 + size,
                                       chunk.message_start_time, chunk.message_end_time,
                                       size, 0))
            self.bio.write(struct.pack('<IQ', 0, size))  # compression '' and its size
            for part in chunk.bio.buffers():
                self.bio.write(part)
            chunk_end = self.bio.tell()
            offsets = []
            for cid, msgs in chunk.msgs.items():
                offsets.append((cid, self.bio.tell()))
                rec = BytesIO()
                mcap.write_uint16(rec, cid)
                mcap.write_uint32(rec, len(msgs) * 16)
                for ts, offset in msgs:
                    mcap.write_uint64(rec, ts)
                    mcap.write_uint64(rec, offset)
                mcap.write_record(self.bio, 0x07, rec)
            rec = BytesIO()
            mcap.write_uint64(rec, chunk.message_start_time)
            mcap.write_uint64(rec, chunk.message_end_time)
            mcap.write_uint64(rec, chunk_start)
            mcap.write_uint64(rec, chunk_end - chunk_start)
            mcap.write_uint32(rec, len(offsets) * 10)
            for cid, offset in offsets:
                mcap.write_uint16(rec, cid)
                mcap.write_uint64(rec, offset)
            mcap.write_uint64(rec, self.bio.tell() - chunk_end)
            mcap.write_string(rec, self.compression)
            mcap.write_uint64(rec, size)
            mcap.write_uint64(rec, size)
            self.chunks.append(rec)

    class FastWriter(Writer):
        """rosbags' Writer with `FastMcapWriter` as its MCAP storage."""

        STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: FastMcapWriter}

    return FastWriter
