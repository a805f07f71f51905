"""Dataset intake for the studio (UI process: no torch, no transformers).

``ingest`` takes an uploaded file (JSONL, JSON, CSV, TSV, Parquet or text, optionally gzip),
detects its format and column mapping, validates it row by row, and writes the valid rows in the
canonical schema to ``<content_hash>.jsonl``; everything streams in bounded memory. See
:mod:`.intake` for the passes, :mod:`.source` for the hash, :mod:`.names` for the file-name
policy and :mod:`.jsonstream` for how JSON documents are streamed. :mod:`.tokens` and
:mod:`.template` show and count rows as a model reads them (tokenizer.json + jinja2);
:mod:`.split` is the stored train/eval split; :mod:`.versions` registers versions in the database.
"""
from .errors import WARNING_KINDS, DatasetError, Problem
from .formats import FIELDS, FORMATS
from .intake import ingest
from .report import IntakeReport
from .tokens import token_lengths, too_long

__all__ = [
    "DatasetError", "FIELDS", "FORMATS", "IntakeReport", "Problem", "WARNING_KINDS",
    "ingest", "token_lengths", "too_long",
]
