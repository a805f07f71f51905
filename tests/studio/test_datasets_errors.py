"""Whole-file errors: each raises DatasetError with a specific message and leaves nothing behind."""
from __future__ import annotations

import gzip
import json
import os

import pytest

from studio.datasets import DatasetError, ingest

from tests.studio.test_datasets_helpers import jsonl, run, write


def fails(tmp_path, name, content, **kwargs) -> str:
    """Ingest expecting a DatasetError; check out_dir holds nothing; return the message."""
    with pytest.raises(DatasetError) as info:
        run(tmp_path, name, content, **kwargs)
    out = tmp_path / "out"
    assert not out.exists() or os.listdir(out) == []
    return str(info.value)


def test_empty_file(tmp_path):
    assert fails(tmp_path, "d.jsonl", b"") == "d.jsonl is empty (0 bytes); upload a file that contains data."
    assert "d.jsonl is empty (only whitespace)" in fails(tmp_path, "d.jsonl", "\n \n")


def test_header_only_csv(tmp_path):
    assert "d.csv contains no records" in fails(tmp_path, "d.csv", "instruction,output\n")


def test_binary_garbage(tmp_path):
    garbage = bytes(range(256)) * 8
    msg = fails(tmp_path, "data.jsonl", garbage)
    assert msg.startswith("data.jsonl contains binary data (at byte 0)")
    assert "not UTF-8 text (at byte 4)" in fails(tmp_path, "data.csv", b"a,b\n\xff\xfe,x\n")


def test_over_the_size_limit(tmp_path):
    msg = fails(tmp_path, "big.jsonl", jsonl([{"text": "x" * 2000}]), max_bytes=1000)
    assert msg == ("big.jsonl is 2.0 KB, over the 1.0 KB upload limit; split it into smaller files "
                   "or raise the size limit.")


def test_gzip_bomb_stops_decompressing(tmp_path):
    bomb = gzip.compress(b" " * (8 << 20))
    assert len(bomb) < 20_000
    msg = fails(tmp_path, "bomb.jsonl.gz", bomb, max_decompressed_bytes=1 << 20)
    assert "bomb.jsonl.gz decompresses to more than 1.0 MB" in msg and "gzip bomb" in msg


def test_corrupt_gzip(tmp_path):
    broken = gzip.compress(jsonl([{"text": "x"}] * 100).encode())[:-30]
    assert "is not a valid gzip file" in fails(tmp_path, "t.jsonl.gz", broken)


@pytest.mark.parametrize("name", ["../../etc/x.jsonl", "/etc/passwd.jsonl", "..\\up.csv", "C:data.csv", "a/b.jsonl"])
def test_names_with_a_path_are_rejected(tmp_path, name):
    path = write(tmp_path, "ok.jsonl", jsonl([{"text": "x"}]))
    with pytest.raises(DatasetError, match="is rejected: it contains a path") as info:
        ingest(path, original_name=name, out_dir=tmp_path / "out")
    assert repr(name) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_unrecognised_columns_lists_found_and_accepted(tmp_path):
    msg = fails(tmp_path, "odd.csv", "foo,bar\n1,2\n")
    assert "Columns found: 'foo', 'bar'" in msg
    assert "instruction: instruction|prompt|question|query + [input|context]" in msg
    assert "label|labels|class|category" in msg and "preference: [prompt|instruction|question|query] + chosen" in msg


def test_the_error_says_what_was_found(tmp_path):
    with pytest.raises(DatasetError) as info:
        run(tmp_path, "odd.csv", "foo,bar\n1,2\n")
    assert (info.value.found.columns, info.value.found.format) == (["foo", "bar"], None)
    with pytest.raises(DatasetError) as info:
        run(tmp_path, "e.jsonl", jsonl([{"q": "x", "a": ""}]), mapping={"instruction": "q", "output": "a"})
    found = info.value.found
    assert (found.columns, found.format, found.mapping) == (["q", "a"], "instruction", {"instruction": "q", "output": "a"})


def test_explicit_format_missing_columns(tmp_path):
    msg = fails(tmp_path, "t.jsonl", jsonl([{"text": "x"}]), format="classification")
    assert "do not match the classification format (columns found: 'text')" in msg
    assert "For classification: found text ← 'text'; missing label." in msg


def test_columns_match_by_case_and_by_word(tmp_path):
    from studio.datasets.formats import detect

    cols = ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Explanation"]
    assert detect("gpqa.csv", cols) == ("instruction", {"instruction": "Question", "output": "Correct Answer"})
    assert detect("r.csv", ["Prompt", "Response"])[1] == {"instruction": "Prompt", "output": "Response"}
    assert detect("c.csv", ["reviewText", "sentimentLabel"]) == ("classification",
                                                                 {"text": "reviewText", "label": "sentimentLabel"})


def test_a_missing_role_names_the_likely_columns_not_every_column(tmp_path):
    # A 78-column CSV once got all 78 names in its error; now: the roles found, the one missing, and the
    # few columns most likely to fill it, as a --map to copy
    header = ["Record ID", "Question", "Right Reply"] + [f"Extra {i}" for i in range(75)]
    msg = fails(tmp_path, "wide.csv", ",".join(header) + "\n" + ",".join(["x"] * len(header)) + "\n")
    assert "(columns found: 78 columns). Closest is instruction: found instruction ← 'Question'; missing output" in msg
    assert "For output, the likeliest columns are 'Right Reply'," in msg and '--map output="Right Reply"' in msg
    assert "Extra 40" not in msg and len(msg) < 700


def test_mapping_naming_a_missing_column(tmp_path):
    msg = fails(tmp_path, "t.jsonl", jsonl([{"q": "x", "a": "y"}]), mapping={"instruction": "q", "output": "ans"})
    assert "column(s) 'ans' that the file does not have; columns found: 'q', 'a'" in msg


def test_unknown_format(tmp_path):
    assert "unknown format 'dpo'" in fails(tmp_path, "t.jsonl", jsonl([{"text": "x"}]), format="dpo")


def test_zero_valid_rows_says_why(tmp_path):
    rows = [{"instruction": f"q{i}", "output": ""} for i in range(20)]
    msg = fails(tmp_path, "empty_out.jsonl", jsonl(rows))
    assert msg == ("empty_out.jsonl has no usable rows: all 20 rows have an empty output "
                   "(rows 1, 2, 3, 4, 5, …). Fix the file and upload it again.")


def test_zero_valid_rows_mixed_reasons(tmp_path):
    rows = [{"instruction": "q", "output": ""}, {"instruction": "q", "output": 3}]
    msg = fails(tmp_path, "mix.jsonl", jsonl(rows))
    assert msg.startswith("mix.jsonl has no usable rows out of 2: 1 empty output (row 1), 1 wrong type in output (row 2)")


def test_every_line_bad_json(tmp_path):
    msg = fails(tmp_path, "bad.jsonl", "{oops\n[1,\n")
    assert msg.startswith("bad.jsonl has no usable rows: all 2 rows are not valid JSON (lines 1, 2)")


def test_json_document_syntax_error_names_the_line(tmp_path):
    text = json.dumps([{"text": "a"}, {"text": "b"}], indent=1).replace('"b"', "b")
    msg = fails(tmp_path, "arr.json", text)
    assert msg.startswith("arr.json is not valid JSON at line 6: Expecting value") and ".jsonl" in msg


def test_csv_duplicate_header(tmp_path):
    assert "column 'text' appears twice" in fails(tmp_path, "d.csv", "text,text\na,b\n")


def test_parquet_name_without_parquet_content(tmp_path):
    assert "is not a Parquet file" in fails(tmp_path, "d.parquet", "text\nhello\n")


def test_failure_leaves_an_existing_out_dir_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    path = write(tmp_path, "e.jsonl", jsonl([{"instruction": "q", "output": ""}]))
    with pytest.raises(DatasetError):
        ingest(path, original_name="e.jsonl", out_dir=out)
    assert os.listdir(out) == ["keep.txt"]


# -- every bad input of issue 6 through registration: a specific message, nothing registered ----

def _chat(*turns) -> dict:
    return {"messages": [{"role": r} | ({} if c is None else {"content": c}) for r, c in turns]}


BAD_UPLOADS = {
    "empty file": ("e.jsonl", b"", {}, r"e.jsonl is empty \(0 bytes\)"),
    "binary garbage": ("g.jsonl", bytes(range(256)) * 8, {}, r"g.jsonl contains binary data \(at byte 0\)"),
    "json mixed types per column": (
        "mixed.json", json.dumps([{"instruction": "q", "output": "a"}, {"instruction": "q", "output": 42}]), {},
        r"mixed.json: 2 rows, 1 bad: 1 wrong type in output \(row 2\)"),
    "csv ragged row": ("r.csv", "instruction,output\nq,a\nq,a,extra\n", {},
                       r"r.csv: 2 rows, 1 bad: 1 ragged row \(row 2, line 3\)"),
    "messages with a tool role": (
        "tool.jsonl", jsonl([_chat(("user", "hi"), ("assistant", "yo")), _chat(("user", "x"), ("tool", "{}"))]), {},
        r"1 unknown role \(row 2\)"),
    "messages missing content": (
        "mc.jsonl", jsonl([_chat(("user", "hi"), ("assistant", "yo")), _chat(("user", "x"), ("assistant", None))]), {},
        r"1 missing content \(row 2\)"),
    "every row too long": ("long.jsonl", jsonl([{"text": "The quick brown fox " * 5}, {"text": "hello " * 40}]),
                           {"model": "tok", "max_seq_length": 8},
                           r"long.jsonl has no usable rows: all 2 rows are longer than max_seq_length"),
    "labels not consistent": ("l.csv", "text,label\na,1\nb,2\nc,1\nd,positive\n", {},
                              r"l.csv: 4 rows, 1 bad: 1 inconsistent label \(row 4\)"),
    "over the size limit": ("big.jsonl", jsonl([{"text": "x" * 1000}] * 1100), {},
                            r"big.jsonl is 1.1 MB, over the 1.0 MB upload limit"),
    "zip bomb in gzip": ("bomb.jsonl.gz", gzip.compress(b" " * (8 << 20)), {},
                         r"bomb.jsonl.gz decompresses to more than 1.0 MB .* gzip bomb"),
    "../ in the file name": ("../../x.jsonl", jsonl([{"text": "x"}]), {}, r"'../../x.jsonl' is rejected: it contains a path"),
    "absolute file name": ("/etc/x.jsonl", jsonl([{"text": "x"}]), {}, r"'/etc/x.jsonl' is rejected: it contains a path"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_is_refused_and_nothing_is_registered(backend, tmp_path, monkeypatch, case):
    from models_db import BaseModel, Dataset, session_scope
    from studio import operations

    from tests.tiny import build_tiny_tokenizer

    name, content, kwargs, message = BAD_UPLOADS[case]
    monkeypatch.setattr(backend, "max_upload_mb", 1)
    if "model" in kwargs:
        build_tiny_tokenizer(tmp_path / "tok")
        with session_scope() as db:
            db.add(BaseModel(name="tok", path=str(tmp_path / "tok"), source="test"))
    path = write(tmp_path, "upload.bin", content)
    with pytest.raises(DatasetError, match=message):
        operations.add_dataset(path, original_name=name, **kwargs)
    with session_scope() as db:
        assert db.query(Dataset).count() == 0
    for folder in ("datasets", "tmp"):
        left = backend.home_abs / folder
        assert not left.exists() or not any(left.rglob("*")), f"{case} left files in {folder}"
