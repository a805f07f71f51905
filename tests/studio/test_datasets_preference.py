"""Preference pairs (DPO, ORPO, SimPO, reward models) and unpaired feedback (KTO): detected, validated row by row
with the row and column named, never skipped silently, and written in one canonical form whatever the layout."""
from __future__ import annotations

import pytest

from studio.datasets import DatasetError

from tests.studio.test_datasets_helpers import by_kind, canonical, jsonl, run


def chat(*turns: str) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def test_pairs_as_text_as_chat_lists_and_with_the_prompt_inside_the_conversations(tmp_path):
    rows = [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},  # plain text
        {"chosen": chat("hi", "hello"), "rejected": chat("hi", "go away")},  # conversations, the prompt inside
        {"prompt": "name?", "chosen": chat("name?", "Ada"), "rejected": [{"role": "assistant", "content": "no"}]},
        {"chosen": chat("a", "b", "c", "good"), "rejected": chat("a", "b", "c", "bad")},  # a multi-turn prompt
    ]
    report = run(tmp_path, "pairs.jsonl", jsonl(rows))
    assert report.format == "preference" and report.problem_counts == {}
    assert canonical(report) == [
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {"prompt": "hi", "chosen": "hello", "rejected": "go away"},
        {"prompt": "name?", "chosen": "Ada", "rejected": "no"},
        {"prompt": chat("a", "b", "c"), "chosen": "good", "rejected": "bad"},
    ]


def test_every_bad_pair_is_named_by_row_and_column(tmp_path):
    rows = [
        {"prompt": "ok", "chosen": "yes", "rejected": "no"},
        {"prompt": "same", "chosen": "the answer", "rejected": "the answer "},
        {"prompt": "empty", "chosen": "", "rejected": "b"},
        {"prompt": "no rejected", "chosen": "c"},
        {"chosen": chat("hi", "hello"), "rejected": chat("yo", "bye")},
        {"chosen": "text without a prompt", "rejected": "another"},
        {"prompt": chat("q", "a"), "chosen": "x", "rejected": "y"},
    ]
    report = run(tmp_path, "bad.jsonl", jsonl(rows))
    assert report.valid_rows == 1
    assert [p.message for p in by_kind(report, "identical_pair")] == [
        "line 2: chosen and rejected are the same answer; a pair must differ (fix one, or drop the row)"]
    assert [p.message for p in by_kind(report, "empty_field")] == ["line 3: chosen is empty"]
    assert [p.message for p in by_kind(report, "missing_field")] == [
        "line 4: rejected is missing",
        "line 6: no prompt: fill prompt, or give chosen and rejected as chat message lists that start with the "
        "user's turn"]
    assert [p.message for p in by_kind(report, "pair_mismatch")] == [
        "line 5: chosen and rejected hold different conversations before their last reply; a pair shares the prompt "
        "and differs only in the reply"]
    assert [(p.row, p.field) for p in by_kind(report, "turn_order")] == [(7, "prompt[1]")]


def test_a_file_without_a_rejected_column_says_it_is_missing(tmp_path):
    with pytest.raises(DatasetError, match=r"Closest is preference: found prompt ← 'prompt', chosen ← 'chosen'; "
                                           "missing rejected"):
        run(tmp_path, "half.jsonl", jsonl([{"prompt": "q", "chosen": "a"}]))


def test_feedback_for_kto_is_detected_and_its_label_must_be_a_boolean(tmp_path):
    rows = [{"prompt": "q1", "completion": "good", "label": True},
            {"prompt": "q2", "completion": "bad", "label": "False"},  # the words true/false, any case (CSV)
            {"prompt": "q3", "completion": "meh", "label": 1},
            {"prompt": "q4", "completion": "eh", "label": "thumbs up"},
            {"prompt": chat("a", "b", "q5"), "completion": [{"role": "assistant", "content": "fine"}], "label": True}]
    report = run(tmp_path, "kto.jsonl", jsonl(rows))
    assert report.format == "feedback" and report.stats["feedback"] == {"desirable": 2, "undesirable": 1}
    assert [p.message for p in by_kind(report, "wrong_type")] == [
        "line 3: label is a number (1), expected true or false (is the completion desirable?). If this is not KTO "
        "feedback, register the file with another --format.",
        "line 4: label is 'thumbs up', expected true or false (is the completion desirable?). If this is not KTO "
        "feedback, register the file with another --format."]
    assert canonical(report) == [{"prompt": "q1", "completion": "good", "label": True},
                                 {"prompt": "q2", "completion": "bad", "label": False},
                                 {"prompt": chat("a", "b", "q5"), "completion": "fine", "label": True}]


def test_feedback_from_csv(tmp_path):
    report = run(tmp_path, "kto.csv", "prompt,completion,label\nq1,a1,true\nq2,a2,false\n")
    assert report.format == "feedback" and canonical(report)[1] == {"prompt": "q2", "completion": "a2", "label": False}


def test_prompt_and_completion_without_a_label_stay_instruction_data(tmp_path):
    report = run(tmp_path, "sft.jsonl", jsonl([{"prompt": "q", "completion": "a"}]))
    assert report.format == "instruction"
