"""Format detection, mapping and canonical rows for every accepted file type."""
from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from studio.datasets import FORMATS, ingest

from tests.studio.test_datasets_helpers import canonical, jsonl, run

ALPACA = [
    {"instruction": "Add", "input": "2 and 3", "output": "5"},
    {"instruction": "Greet", "input": "", "output": "Hello"},
]


def test_alpaca_json_array(tmp_path):
    report = run(tmp_path, "alpaca.json", json.dumps(ALPACA, indent=2))
    assert (report.file_type, report.format) == ("json", "instruction")
    assert report.mapping == {"instruction": "instruction", "input": "input", "output": "output"}
    assert canonical(report) == [
        {"messages": [{"role": "user", "content": "Add\n\n2 and 3"}, {"role": "assistant", "content": "5"}]},
        {"messages": [{"role": "user", "content": "Greet"}, {"role": "assistant", "content": "Hello"}]},
    ]
    assert report.preview == canonical(report)
    assert report.summary() == "2 rows, all valid"
    assert report.stats["turns"] == {"min": 2, "max": 2, "mean": 2.0}


def test_json_object_of_records_and_single_record(tmp_path):
    report = run(tmp_path, "wrapped.json", json.dumps({"version": 2, "data": ALPACA}))
    assert report.valid_rows == 2
    single = run(tmp_path, "one.json", json.dumps({"prompt": "Hi", "completion": "Hello"}))
    assert (single.format, single.valid_rows) == ("instruction", 1)
    keyed = run(tmp_path, "keyed.json", json.dumps({"a": {"text": "x"}, "b": {"text": "y"}}))
    assert canonical(keyed) == [{"text": "x"}, {"text": "y"}]


def test_json_file_holding_json_lines_is_read_as_jsonl(tmp_path):
    report = run(tmp_path, "data.json", jsonl(ALPACA))
    assert (report.file_type, report.valid_rows) == ("jsonl", 2)


def test_openai_messages_with_system_and_multi_turn(tmp_path):
    row = {"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Bye"},
    ]}
    report = run(tmp_path, "chat.jsonl", jsonl([row]))
    assert report.format == "chat" and canonical(report) == [row]
    assert report.stats["turns"]["max"] == 4 and report.stats["with_system"] == 1


def test_sharegpt_conversations_and_system_column(tmp_path):
    row = {"system": "You are kind.", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]}
    report = run(tmp_path, "sharegpt.jsonl", jsonl([row]))
    assert report.mapping == {"messages": "conversations", "system": "system"}
    assert canonical(report)[0]["messages"] == [
        {"role": "system", "content": "You are kind."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Yo"},
    ]


def test_csv_with_aliases_and_system_column(tmp_path):
    report = run(tmp_path, "qa.csv", 'Question,Answer,system_prompt\n"What, exactly?","Multi\nline",Be nice\n')
    assert report.mapping == {"instruction": "Question", "output": "Answer", "system": "system_prompt"}
    assert canonical(report)[0]["messages"] == [
        {"role": "system", "content": "Be nice"}, {"role": "user", "content": "What, exactly?"},
        {"role": "assistant", "content": "Multi\nline"},
    ]


def test_tsv_classification_with_label_stats(tmp_path):
    report = run(tmp_path, "cls.tsv", "sentence\tcategory\ngood\tpos\nbad\tneg\nfine\tpos\n")
    assert (report.file_type, report.format) == ("tsv", "classification")
    assert report.stats["labels"] == {"pos": 2, "neg": 1}
    assert canonical(report)[1] == {"text": "bad", "label": "neg"}


def test_parquet_chat_rows(tmp_path):
    table = pa.table({"messages": [[{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]] * 3,
                      "id": [1, 2, 3]})
    path = tmp_path / "chat.parquet"
    pq.write_table(table, path)
    report = ingest(path, original_name="chat.parquet", out_dir=tmp_path / "out")
    assert (report.file_type, report.format, report.total_rows) == ("parquet", "chat", 3)
    assert report.valid_rows == 1 and report.problem_counts == {"duplicate": 2}


def test_plain_text_one_row_per_line(tmp_path):
    report = run(tmp_path, "book.txt", "First line.\n\nSecond line.\n")
    assert (report.format, canonical(report)) == ("text", [{"text": "First line."}, {"text": "Second line."}])


def test_preference_pairs(tmp_path):
    row = {"prompt": "2+2?", "chosen": "4", "rejected": "5"}
    report = run(tmp_path, "pref.jsonl", jsonl([row]))
    assert report.format == "preference" and canonical(report) == [row]


def test_gzip_is_transparent_and_hashes_like_the_plain_file(tmp_path):
    text = jsonl(ALPACA)
    plain = run(tmp_path, "a.jsonl", text)
    packed = run(tmp_path, "a.jsonl.gz", gzip.compress(text.encode(), mtime=123))
    assert packed.content_hash == plain.content_hash and packed.file_type == "jsonl"


def test_content_hash_changes_with_the_mapping_but_not_the_name(tmp_path):
    rows = [{"question": "q", "answer": "a", "context": "c"}]
    auto = run(tmp_path, "x.jsonl", jsonl(rows))
    renamed = run(tmp_path, "y.jsonl", jsonl(rows))
    remapped = run(tmp_path, "x.jsonl", jsonl(rows), mapping={"instruction": "question", "output": "answer"})
    assert auto.content_hash == renamed.content_hash != remapped.content_hash
    assert auto.mapping["input"] == "context" and "input" not in remapped.mapping
    assert remapped.format == "instruction" and remapped.canonical_path.name == f"{remapped.content_hash}.jsonl"


def test_explicit_format_overrides_detection(tmp_path):
    rows = [{"text": "hello", "label": "x"}]
    assert run(tmp_path, "c.jsonl", jsonl(rows)).format == "classification"
    report = run(tmp_path, "c.jsonl", jsonl(rows), format="text")
    assert report.format == "text" and canonical(report) == [{"text": "hello"}]


def test_unknown_extension_is_sniffed(tmp_path):
    assert run(tmp_path, "upload.bin", "text,label\nhi,a\n").file_type == "csv"
    assert run(tmp_path, "upload", jsonl(ALPACA)).file_type == "jsonl"


def test_report_to_json_round_trips(tmp_path):
    report = run(tmp_path, "a.jsonl", jsonl(ALPACA + ["{bad"]))
    data = json.loads(json.dumps(report.to_json()))
    assert data["problems"][0] == {"kind": "bad_json", "row": 3, "field": None,
                                   "message": "line 3 is not valid JSON: Expecting property name enclosed in double quotes (column 2)"}
    assert data["summary"] == report.summary() and FORMATS == (
        "instruction", "chat", "text", "classification", "preference", "feedback", "multiple_choice", "qa")


@pytest.mark.parametrize("chunked", [False, True])
def test_large_json_array_streams_across_chunks(tmp_path, monkeypatch, chunked):
    from studio.datasets import jsonstream
    if chunked:
        monkeypatch.setattr(jsonstream, "CHUNK", 7)
    rows = [{"text": f"row {i} " + "x" * (i % 13), "n": i * 1.5} for i in range(300)]
    report = run(tmp_path, "big.json", json.dumps({"meta": {"k": 1}, "rows": rows}, indent=1))
    assert report.total_rows == report.valid_rows == 300 and canonical(report)[299]["text"].startswith("row 299")


def test_bom_and_long_leading_blank_lines(tmp_path):
    report = run(tmp_path, "b.jsonl", "\ufeff" + "\n" * 70_000 + jsonl(ALPACA))
    assert report.valid_rows == 2 and report.problems == []
    assert canonical(run(tmp_path, "b.csv", "\ufefftext,label\nhi,a\n")) == [{"text": "hi", "label": "a"}]


def test_intake_never_imports_torch_or_transformers():
    import subprocess
    import sys

    code = ("import sys, studio.datasets; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')]; "
            "assert not bad, bad")
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
