"""Duplicate detection in memory that does not grow with the file.

Each canonical row is reduced to a 128-bit BLAKE2b digest. A fixed-size Bloom filter (16 MiB)
answers "certainly new" for almost every row; only when it says "maybe seen" is an on-disk SQLite
table of (64-bit key -> first row number) consulted. New keys are inserted in batches, so the
table costs little per row and SQLite's page cache bounds its memory. Two different rows sharing a
64-bit key (odds about n^2 / 2^65, ~3e-8 for a million rows) would be reported as duplicates.
"""
from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

BLOOM_BITS = 1 << 27  # 16 MiB
HASHES = 4
BATCH = 10_000


class SeenRows:
    """Remembers rows by content; :meth:`first_row` tells whether a row was seen before."""

    def __init__(self, db_path: Path, bloom_bits: int = BLOOM_BITS):
        self.bits = bytearray(bloom_bits // 8)
        self.mask = bloom_bits - 1
        self.db = sqlite3.connect(db_path)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE seen (key INTEGER PRIMARY KEY, row INTEGER NOT NULL)")
        self.pending: list[tuple[int, int]] = []

    def first_row(self, data: bytes, row: int) -> int | None:
        """Return the row number of an earlier identical row, or None (and remember this one)."""
        digest = int.from_bytes(hashlib.blake2b(data, digest_size=16).digest(), "little")
        key = (digest & 0xFFFF_FFFF_FFFF_FFFF) - (1 << 63)  # signed 64-bit for SQLite
        if self._maybe_seen(digest):
            self._flush()
            hit = self.db.execute("SELECT row FROM seen WHERE key = ?", (key,)).fetchone()
            if hit:
                return hit[0]
        self.pending.append((key, row))
        if len(self.pending) >= BATCH:
            self._flush()
        return None

    def _maybe_seen(self, digest: int) -> bool:
        seen = True
        bits = self.bits
        for i in range(HASHES):
            pos = (digest >> (32 * i)) & self.mask
            byte, bit = pos >> 3, 1 << (pos & 7)
            if not bits[byte] & bit:
                seen = False
                bits[byte] |= bit
        return seen

    def _flush(self) -> None:
        if self.pending:
            self.db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", self.pending)
            self.pending.clear()

    def close(self) -> None:
        """Close the on-disk table."""
        self.db.close()
