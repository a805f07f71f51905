"""Fuzzed intake: whatever bytes arrive, the readers and format detection end in a data set or a clear
DatasetError — never another exception, a hang, or memory beyond studio.datasets.limits.MEMORY_BOUND.

Hypothesis generates random bytes, JSON of any shape and depth, CSV with every quoting trouble, odd
encodings (UTF-16, BOMs, Latin-1), gzip of all of these (cut short too) and small mutations of valid files.
Each example runs under a time budget (an alarm: a hang fails the test) with Python's allocations traced
(the peak must stay under the bound). The budget is fixed for CI: ``max_examples`` per property
(``STUDIO_FUZZ_EXAMPLES`` raises it for a longer local run), a deadline, and derandomized generation, so a
run is reproducible. The worst cases that random generation would rarely reach — a row at the size limit,
bombs (gzip, zip, a Parquet dictionary), a quote never closed, deep nesting — are explicit tests below.
"""
from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import shutil
import signal
import tempfile
import tracemalloc
import zipfile
import zlib
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from studio.datasets import DatasetError, IntakeReport, ingest, limits
from studio.datasets.formats import FIELDS

EXAMPLES = int(os.environ.get("STUDIO_FUZZ_EXAMPLES", "40"))
SECONDS_PER_EXAMPLE = 20  # a hang; a normal example takes milliseconds
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=5), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
NAMES = ["d.jsonl", "d.json", "d.csv", "d.tsv", "d.txt", "d", "d.parquet", "d.jsonl.gz", "d.csv.gz", "d.zip"]
KEYS = sorted({alias for fields in FIELDS.values() for f in fields for alias in f.aliases}) + ["role", "content", "x"]


class Hang(Exception):
    """The intake ran past its time budget."""


@contextmanager
def budget(seconds: float):
    def on_alarm(signum, frame):
        raise Hang(f"the intake ran past {seconds} s")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def outcome(root: Path, name: str, data: bytes, **limits_kw) -> IntakeReport | DatasetError:
    """Ingest ``data`` uploaded as ``name``: the report or the DatasetError; anything else, a hang or a
    peak over the memory bound fails."""
    work = Path(tempfile.mkdtemp(dir=root))
    src = work / "upload"
    src.write_bytes(data)
    tracemalloc.start()
    try:
        with budget(SECONDS_PER_EXAMPLE):
            report = ingest(src, original_name=name, out_dir=work / "out", **limits_kw)
        assert report.valid_rows > 0 and report.canonical_path.is_file()
        return report
    except DatasetError as e:
        message = str(e)
        assert len(message) > 20 and "Traceback" not in message, message  # a sentence, not a repr
        assert not (work / "out").exists() or not any((work / "out").iterdir())  # nothing left behind
        return e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        shutil.rmtree(work, ignore_errors=True)
        assert peak < limits.MEMORY_BOUND, f"{name}: peak {peak / 2**20:.0f} MiB"


def fuzz(root: Path, name: str, data: bytes) -> None:
    """:func:`outcome` inside a property; Hypothesis's statistics count data sets and errors by their kind."""
    got = outcome(root, name, data)
    event(f"data set ({got.format})" if isinstance(got, IntakeReport) else f"DatasetError: {_gist(str(got))}")


def _gist(message: str) -> str:
    for marker in (" is ", " has ", " contains ", ": "):
        if marker in message:
            return message.split(marker, 1)[1][:40]
    return message[:40]


# --- strategies -----------------------------------------------------------------------------------------

text = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", " ", "\n", "\r\n", '"', '""', ",", "\t", "\ufeff", "\u2028", "\x00", "\\ud800", "####", "\\boxed{1}"])
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | text
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) |
                           st.dictionaries(st.sampled_from(KEYS) | text, inner, max_size=4), max_leaves=25)
words = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=30)
turn = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool", "bot"]), "content": words})
VALUES = {"messages": st.lists(turn, min_size=0, max_size=4), "choices": st.lists(words, max_size=5),
          "label": st.sampled_from(["pos", "neg", 0, 1, True, False, "maybe"]),
          "answer": st.sampled_from([0, 1, 2, "A", "B", "#### 42", "\\boxed{7}", "7"]),
          "chosen": words | st.lists(turn, min_size=1, max_size=3), "rejected": words | st.lists(turn, min_size=1, max_size=3)}


@st.composite
def shaped_records(draw) -> dict:
    """A record that has the columns of some format (so most examples get past detection), values mostly fit."""
    fields = FIELDS[draw(st.sampled_from(sorted(FIELDS)))]
    record = {}
    for field in fields:
        if field.required or draw(st.booleans()):
            value = draw(VALUES.get(field.name, words) | scalars) if draw(st.integers(0, 9)) == 0 else \
                draw(VALUES.get(field.name, words))
            record[draw(st.sampled_from(field.aliases))] = value
    return record


@st.composite
def consistent_rows(draw) -> list[dict]:
    """Rows of one format under one set of columns, with fitting values: a file that should mostly load."""
    fmt = draw(st.sampled_from(sorted(FIELDS)))
    columns = {f.name: draw(st.sampled_from(f.aliases)) for f in FIELDS[fmt] if f.required or draw(st.booleans())}
    dialog = st.lists(words, min_size=1, max_size=3).map(
        lambda turns: [{"role": r, "content": t} for t in turns for r in ("user", "assistant")])
    good = {**VALUES, "messages": dialog, "chosen": words, "rejected": words,
            "label": st.sampled_from(["pos", "neg"] if fmt == "classification" else [True, False])}
    row = st.fixed_dictionaries({col: good.get(name, words) for name, col in columns.items()})
    return draw(st.lists(row | st.just({"noise": 1}) if draw(st.booleans()) else row, min_size=1, max_size=8))


records = shaped_records() | st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5) | json_values
# mostly UTF-8 (or the intake would mostly answer "save it as UTF-8"), sometimes not
encodings = st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "utf-16", "utf-16-le", "latin-1", "cp1252"])


def encode(s: str, encoding: str) -> bytes:
    return s.encode(encoding, errors="replace")


@st.composite
def json_files(draw) -> tuple[str, bytes]:
    rows = draw(consistent_rows() | st.lists(records, min_size=0, max_size=8))
    if draw(st.booleans()):
        body, name = "".join(json.dumps(r, ensure_ascii=draw(st.booleans())) + draw(st.sampled_from(["\n", "\r\n", "\n\n"]))
                             for r in rows), draw(st.sampled_from(["d.jsonl", "d", "d.txt"]))
    else:
        body, name = json.dumps(draw(st.sampled_from([rows, {"data": rows, "version": 1}, rows[0] if rows else {}]))), \
            draw(st.sampled_from(["d.json", "d", "d.jsonl"]))
    return name, encode(body, draw(encodings))


@st.composite
def csv_files(draw) -> tuple[str, bytes]:
    delimiter = draw(st.sampled_from([",", "\t", ";"]))
    header = draw(st.lists(st.sampled_from(KEYS) | text, min_size=1, max_size=5) |
                  shaped_records().map(list).filter(bool))
    cell = text | words | st.sampled_from(["pos", "neg", "0", "1", "true", "A", "#### 3"])
    rows = draw(st.lists(st.lists(cell, min_size=len(header), max_size=len(header)) |
                         st.lists(cell, min_size=0, max_size=6), max_size=8))
    out = io.StringIO()
    if draw(st.booleans()):  # written by the csv module, with some quoting policy
        writer = csv.writer(out, delimiter=delimiter, quoting=draw(st.sampled_from(
            [csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])), lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"])))
        for row in [header, *rows]:
            try:
                writer.writerow(row)
            except csv.Error:
                continue
    else:  # hand-joined: unbalanced quotes, stray quotes, quoted newlines
        for row in [header, *rows]:
            out.write(delimiter.join(row) + draw(st.sampled_from(["\n", "\r\n", '"\n', ""])))
    name = draw(st.sampled_from(["d.csv", "d.tsv", "d", "d.txt"]))
    return name, encode(out.getvalue(), draw(encodings))


def deep(depth: int, kind: str) -> str:
    opening, closing = {"list": ("[", "]"), "dict": ('{"text":', "}")}[kind]
    return opening * depth + "1" + closing * depth


# --- properties -------------------------------------------------------------------------------------------

@FUZZ
@given(name=st.sampled_from(NAMES), data=st.binary(min_size=0, max_size=4096))
@example(name="d.jsonl", data=b"\xff\xfe{\x00}\x00")
@example(name="d.parquet", data=b"PAR1" + bytes(200) + b"PAR1")
def test_random_bytes(tmp_path, name, data):
    fuzz(tmp_path, name, data)


@FUZZ
@given(file=json_files())
@example(file=("d.jsonl", b'{"text": ' + deep(5000, "list").encode() + b"}\n"))
@example(file=("d.json", b"[" + deep(5000, "dict").encode() + b"]"))
@example(file=("d.jsonl", b'{"text": "a", "label": 1e400}\n{"text": "b", "label": 1}\n'))
def test_json_of_any_shape_depth_and_encoding(tmp_path, file):
    fuzz(tmp_path, *file)


@FUZZ
@given(file=csv_files())
@example(file=("d.csv", b'text,label\n"never closed,1\nb,2\n'))
@example(file=("d.csv", b"\xef\xbb\xbftext,label\r\na,1\r\n"))
@example(file=("d.csv", ("text," * 20_000 + "x\n1\n").encode()))
def test_csv_quoting_and_dialects(tmp_path, file):
    fuzz(tmp_path, *file)


@FUZZ
@given(file=json_files() | csv_files(), cut=st.just(0) | st.integers(1, 64), level=st.integers(0, 9))
def test_gzip_of_anything_whole_or_cut_short(tmp_path, file, cut, level):
    name, data = file
    packed = gzip.compress(data, compresslevel=level)
    fuzz(tmp_path, name + ".gz", packed[:len(packed) - cut] if cut else packed)


@FUZZ
@given(file=json_files() | csv_files(), edits=st.lists(st.tuples(st.integers(0, 10_000), st.binary(max_size=3),
                                                                  st.integers(0, 3)), min_size=1, max_size=6))
def test_small_mutations_of_valid_files(tmp_path, file, edits):
    name, data = file
    buf = bytearray(data)
    for at, insert, drop in edits:  # replace `drop` bytes at `at` with `insert`
        at = at % (len(buf) + 1)
        buf[at:at + drop] = insert
    fuzz(tmp_path, name, bytes(buf))


@settings(FUZZ, max_examples=max(10, EXAMPLES // 4))
@given(file=json_files() | csv_files())
def test_through_registration(backend, tmp_path, file):
    """The same through the register path the UI and CLI use: a data set row, or a DatasetError."""
    from models_db import Dataset, session_scope
    from studio.datasets import versions

    name, data = file
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    src = work / name
    src.write_bytes(data)
    try:
        with budget(SECONDS_PER_EXAMPLE):
            ds, report, _ = versions.register(src, original_name=name, drop_bad_rows=True)
    except DatasetError as e:
        assert len(str(e)) > 20
        return
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with session_scope() as db:
        assert db.get(Dataset, ds.id).rows + db.get(Dataset, ds.id).eval_rows == report.valid_rows


# --- the worst cases, each once ---------------------------------------------------------------------------

BIG = limits.MAX_ROW_CHARS


@pytest.mark.parametrize("name, data, expect", [
    ("row-at-limit.jsonl", b'{"text": "' + b"a" * (BIG - 20) + b'"}\n', None),
    ("row-over.jsonl", b'{"text": "' + b"a" * (BIG + 10) + b'"}\n{"text": "ok"}\n', None),
    ("row-over.txt", b"a" * (BIG + 10) + b"\nok\n", None),
    ("wide-over.jsonl", ('{"text": "' + "\U0001f600" * (BIG + 10) + '"}\n').encode(), "longer than one row"),
    ("unclosed.csv", b'text,label\n"' + b"a" * (BIG + 10) + b"\n", "a quote that is never closed"),
    ("record-over.json", b'[{"text": "' + b"a" * (BIG + 10) + b'"}]', "longer than one row may be"),
    ("deep.json", b"[" + deep(100_000, "list").encode() + b"]", "nested more than 64 levels"),
    ("deep.jsonl", deep(100_000, "dict").encode() + b"\n", "nested too deeply"),
    ("utf16.jsonl", '{"text": "hi"}\n'.encode("utf-16"), "is UTF-16 text"),
    ("utf16.csv", "text\nhi\n".encode("utf-16-le"), "is UTF-16 text"),
    ("utf32.csv", codecs.BOM_UTF32_LE + "text\nhi\n".encode("utf-32-le"), "is UTF-32 text"),
    ("latin1.csv", "text\ncafé\n".encode("latin-1"), "iconv -f latin1"),
])
def test_worst_cases_end_clearly_within_the_bound(tmp_path, name, data, expect):
    got = outcome(tmp_path, name, data)
    if expect is None:
        assert isinstance(got, IntakeReport) and got.valid_rows == 1, got
        assert got.problem_counts in ({}, {"too_large": 1}), got.problem_counts
    else:
        assert isinstance(got, DatasetError) and expect in str(got), got


def test_bombs_are_stopped(tmp_path):
    packer, chunk = zlib.compressobj(9, zlib.DEFLATED, 31), b"a" * 2**20  # gzip, ~1000:1, 100 MiB
    gz = packer.compress(b'{"text": "') + b"".join(packer.compress(chunk) for _ in range(100)) + packer.flush()
    got = outcome(tmp_path, "bomb.jsonl.gz", gz)
    assert isinstance(got, DatasetError) and "at most 200 times the compressed size" in str(got)

    member = io.BytesIO()
    with zipfile.ZipFile(member, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("data.jsonl", "w") as inner:
        for _ in range(100):
            inner.write(b"a" * 2**20)
    for name in ("bomb.zip", "bomb.jsonl"):  # never unpacked, whatever its name
        got = outcome(tmp_path, name, member.getvalue())
        assert isinstance(got, DatasetError) and "Archives (zip, tar) are not unpacked" in str(got)

    import pyarrow as pa
    import pyarrow.parquet as pq

    one_value = pa.DictionaryArray.from_arrays(pa.array([0] * 2000, pa.int32()), pa.array(["x" * 5_000_000]))
    table = pa.table({"text": one_value})  # 10 GB once decoded
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    got = outcome(tmp_path, "bomb.parquet", buf.getvalue())
    assert isinstance(got, DatasetError) and "expands to more than" in str(got)


def test_parquet_rows_are_sized_before_they_are_decoded(tmp_path, monkeypatch):
    """A batch too large to decode at once goes one row at a time, and a row over the limit is a problem."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from studio.datasets import readers

    monkeypatch.setattr(readers, "PARQUET_BATCH_BYTES", 100)
    monkeypatch.setattr(readers, "MAX_ROW_CHARS", 500)
    texts = [f"row {i} " + "y" * (50 * i) for i in range(20)]  # rows 11..20 are over 500 characters
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": texts, "label": [str(i % 2) for i in range(20)]}), buf)
    got = outcome(tmp_path, "rows.parquet", buf.getvalue())
    assert isinstance(got, IntakeReport) and got.valid_rows == 10 and got.problem_counts == {"too_large": 10}


NATIVE_PROBE = """
import resource, sys
from pathlib import Path
import pyarrow as pa
from studio.datasets import DatasetError, ingest
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
try:
    ingest(Path(sys.argv[1]), original_name="bomb.parquet", out_dir=Path(sys.argv[2]))
    print("registered")
except DatasetError as e:
    print("refused:", e)
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start
print(grew, pa.default_memory_pool().max_memory())
"""


def test_a_parquet_bomb_stays_within_the_bound_in_native_memory_too(tmp_path):
    """tracemalloc sees Python's allocations only; Arrow decodes in its own pool. In a fresh process, the peak
    of that pool and the growth of the process's resident memory stay under the bound as well."""
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    one_value = pa.DictionaryArray.from_arrays(pa.array([0] * 2000, pa.int32()), pa.array(["x" * 5_000_000]))
    pq.write_table(pa.table({"text": one_value}), tmp_path / "bomb.parquet", compression="zstd")  # 10 GB decoded
    p = subprocess.run([sys.executable, "-c", NATIVE_PROBE, str(tmp_path / "bomb.parquet"), str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120, check=False, cwd=Path(__file__).resolve().parents[2])
    assert p.returncode == 0, p.stderr[-2000:]
    verdict, figures = p.stdout.strip().splitlines()[-2:]
    assert verdict.startswith("refused:") and "expands to more than" in verdict, verdict
    grew, arrow_peak = map(int, figures.split())
    assert grew < limits.MEMORY_BOUND and arrow_peak < limits.MEMORY_BOUND, (grew >> 20, arrow_peak >> 20)
