"""Benchmark files: multiple-choice sets (a list of choices, or MMLU-style A/B/C/D columns) and question/answer
sets with an extractable final answer, detected from their columns (and, for qa, their answers), every bad row
named with its column and refused up front."""
from __future__ import annotations

import pytest

from studio.datasets import DatasetError
from studio.datasets.benchmark_rows import final_answer

from tests.studio.test_datasets_helpers import by_kind, canonical, jsonl, run


def test_multiple_choice_with_a_list_of_choices_and_answers_as_index_letter_or_text(tmp_path):
    rows = [{"question": "2+2?", "choices": ["3", "4"], "answer": 1},
            {"question": "Capital of France?", "choices": ["Paris", "Rome", "Oslo"], "answer": "A"},
            {"question": "Colour of the sky?", "choices": ["green", "blue"], "answer": "blue"}]
    report = run(tmp_path, "mc.jsonl", jsonl(rows))
    assert report.format == "multiple_choice" and report.problem_counts == {}
    out = canonical(report)
    assert [(r["choices"], r["answer"]) for r in out] == [(["3", "4"], 1), (["Paris", "Rome", "Oslo"], 0),
                                                          (["green", "blue"], 1)]
    assert out[1]["messages"] == [{"role": "user", "content": "Capital of France?"},
                                  {"role": "assistant", "content": "Paris"}]


def test_mmlu_style_csv_with_one_column_per_letter(tmp_path):
    csv = ("question,A,B,C,D,answer\n"
           "Largest planet?,Mars,Jupiter,Venus,Earth,B\n"
           "Smallest prime?,1,2,3,4,B\n"
           "Only two?,yes,no,,,A\n")
    report = run(tmp_path, "mmlu.csv", csv)
    assert report.format == "multiple_choice"
    assert report.mapping == {"question": "question", "choices": "A,B,C,D", "answer": "answer"}
    assert [(r["choices"], r["answer"]) for r in canonical(report)] == [
        (["Mars", "Jupiter", "Venus", "Earth"], 1), (["1", "2", "3", "4"], 1), (["yes", "no"], 0)]


def test_every_bad_multiple_choice_row_is_named(tmp_path):
    rows = [{"question": "ok", "choices": ["a", "b"], "answer": 0},
            {"question": "range", "choices": ["a", "b", "c"], "answer": 3},
            {"question": "one", "choices": ["only"], "answer": 0},
            {"question": "dup", "choices": ["same", "other", "Same"], "answer": 0},
            {"question": "letter", "choices": ["a", "b"], "answer": "D"},
            {"question": "neither", "choices": ["a", "b"], "answer": "maybe"}]
    report = run(tmp_path, "bad.jsonl", jsonl(rows))
    assert report.valid_rows == 1
    assert [(p.kind, p.field, p.message) for p in report.problems] == [
        ("answer_out_of_range", "answer", "line 2: answer is 3, but there are 3 choices (indexes 0 to 2, or letters "
                                          "A to C)"),
        ("too_few_choices", "choices", "line 3: choices has 1 choice(s); a multiple-choice question needs at least two"),
        ("duplicate_choices", "choices", "line 4: choices A and C of choices are the same ('Same'); each choice must "
                                         "differ"),
        ("answer_letter", "answer", "line 5: answer is 'D', but the choices go from A to B"),
        ("answer_letter", "answer", "line 6: answer is 'maybe': neither a letter A to B, an index 0 to 1, nor one of "
                                    "the choices"),
    ]


def test_qa_detected_from_final_answer_markers_and_answers_extracted(tmp_path):
    rows = [{"question": "Tom has 3 apples and buys 4. How many?", "answer": "3 + 4 = 7\n#### 7"},
            {"question": "Half of 1,000?", "answer": "1000 / 2 = 500\n#### 500"},
            {"question": "Area?", "answer": "The area is \\boxed{12.50}."}]
    report = run(tmp_path, "gsm.jsonl", jsonl(rows))
    assert report.format == "qa" and report.problem_counts == {}
    assert [r["answer"] for r in canonical(report)] == ["7", "500", "12.5"]
    # without markers the same columns are instruction data
    plain = run(tmp_path, "plain.jsonl", jsonl([{"question": "hi?", "answer": "hello"}]))
    assert plain.format == "instruction"


def test_qa_without_an_extractable_answer_is_refused_with_its_row(tmp_path):
    rows = [{"question": "a", "answer": "#### 4"}, {"question": "b", "answer": "no number here"}]
    report = run(tmp_path, "qa.jsonl", jsonl(rows), format="qa")
    assert [p.message for p in by_kind(report, "no_final_answer")] == [
        "line 2: no final answer in answer: end it with '#### <answer>', a \\boxed{…} or a number"]
    with pytest.raises(DatasetError, match="no extractable final answer"):
        run(tmp_path, "none.jsonl", jsonl(rows[1:]), format="qa")


@pytest.mark.parametrize("text,answer", [("so #### 1,234", "1234"), ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
                                         ("it is 3, then 5.0.", "5"), ("#### -2", "-2"), ("none", None),
                                         ("$18.", "18")])
def test_final_answer(text, answer):
    assert final_answer(text) == answer
