"""Streaming reader for JSON documents (``.json``): an array of records, or an object of records.

Choice: a small incremental parser over a sliding text buffer using
``json.JSONDecoder.raw_decode`` one record at a time, so memory is bounded by the largest single
record (at most :data:`MAX_RECORD` characters), never by the file. Accepted shapes:

* ``[ {...}, {...} ]`` — each element is a record;
* ``{"data": [ {...}, ... ], "version": 1}`` — arrays under non-field keys are streamed as
  records, object values holding a known column name are records, other metadata is skipped;
* ``{"instruction": ..., "output": ...}`` — an object whose first key is a known field name is one
  record.

A syntax error in a JSON document cannot be skipped reliably, so it is a whole-file error that
points at the line (JSON Lines files, by contrast, get one ``bad_json`` problem per bad line).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from .errors import DatasetError
from .limits import MAX_DEPTH, MAX_ROW_CHARS

CHUNK = 1 << 20
MAX_RECORD = MAX_ROW_CHARS
_WS = " \t\r\n"
_decoder = json.JSONDecoder()


class JsonStream:
    """Yields the records of a JSON document read from a text stream."""

    def __init__(self, text_io, name: str, is_field: Callable[[str], bool]):
        self.f, self.name, self.is_field = text_io, name, is_field
        self.buf, self.pos, self.eof, self.lines_before = "", 0, False, 0

    def records(self) -> Iterator[object]:
        """Iterate over the records of the document, in order."""
        ch = self._peek()
        if ch == "[":
            self.pos += 1
            yield from self._array()
        elif ch == "{":
            yield from self._object()
        else:
            self._fail("the file must start with '[' (a list of records) or '{'")
        if self._peek() is not None:
            self._fail("there is more data after the end of the JSON document (is this JSON Lines? "
                       "then name it .jsonl)")

    def _array(self) -> Iterator[object]:
        if self._peek() == "]":
            self.pos += 1
            return
        while True:
            yield self._decode()
            ch = self._peek()
            self.pos += 1
            if ch == "]":
                return
            if ch != ",":
                self.pos -= 1
                self._fail("expected ',' or ']' between records")

    def _object(self) -> Iterator[object]:
        start = self.pos
        self.pos += 1
        if self._peek() == "}":
            self.pos += 1
            return
        key = self._decode()
        if isinstance(key, str) and self.is_field(key):
            self.pos = start
            yield self._decode()
            return
        while True:
            if self._peek() != ":":
                self._fail("expected ':' after a key")
            self.pos += 1
            if self._peek() == "[":
                self.pos += 1
                yield from self._array()
            else:
                value = self._decode()
                if isinstance(value, dict) and any(self.is_field(k) for k in value):
                    yield value  # an object of records; other objects are metadata
            ch = self._peek()
            self.pos += 1
            if ch == "}":
                return
            if ch != ",":
                self.pos -= 1
                self._fail("expected ',' or '}' between entries")
            self._peek()
            key = self._decode()

    def _decode(self) -> object:
        self._peek()
        while True:
            try:
                value, end = _decoder.raw_decode(self.buf, self.pos)
            except RecursionError:  # json's own limit on nesting (about 1000 levels)
                self._fail(f"a record is nested more than {MAX_DEPTH} levels deep")
            except json.JSONDecodeError as exc:
                if len(self.buf) - self.pos > MAX_RECORD:
                    self._fail(f"a record is longer than {MAX_RECORD:,} characters (the limit of one row)")
                if self.eof or not self._fill():
                    self.pos = max(exc.pos, self.pos)
                    self._fail(exc.msg)
                continue
            if end == len(self.buf) and not self.eof and self._fill():
                continue  # a number or literal may go on in the next chunk
            self.pos = end
            return value

    def _peek(self) -> str | None:
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return None

    def _fill(self) -> bool:
        if self.eof:
            return False
        chunk = self.f.read(CHUNK)
        if not chunk:
            self.eof = True
            return False
        if self.pos > CHUNK:
            self.lines_before += self.buf.count("\n", 0, self.pos)
            self.buf, self.pos = self.buf[self.pos:], 0
        self.buf += chunk
        return True

    def _fail(self, why: str):
        line = self.lines_before + self.buf.count("\n", 0, self.pos) + 1
        raise DatasetError(
            f"{self.name} is not valid JSON at line {line}: {why}. Fix the file, or save it as "
            "JSON Lines (one record per line, .jsonl) so that bad lines can be skipped."
        )
