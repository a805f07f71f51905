"""Row problems: collected with row numbers and fields, never raised; bad rows are left out."""
from __future__ import annotations

import json

from tests.studio.test_datasets_helpers import by_kind, canonical, jsonl, run

GOOD = {"instruction": "q", "output": "a"}


def chat(*turns, key="messages"):
    """A chat row from (role, content) pairs; content None leaves the key out."""
    msgs = [{"role": r} | ({} if c is None else {"content": c}) for r, c in turns]
    return {key: msgs}


def test_bad_json_line_number_and_summary(tmp_path):
    rows = [GOOD | {"output": str(i)} for i in range(16)] + ['{"instruction": "q", "output": }']
    rows += [{"instruction": "q", "output": ""}, GOOD | {"output": "z"}]
    report = run(tmp_path, "d.jsonl", jsonl(rows))
    [bad] = by_kind(report, "bad_json")
    assert (bad.row, bad.field) == (17, None) and bad.message.startswith("line 17 is not valid JSON")
    assert (report.total_rows, report.valid_rows) == (19, 17)
    assert report.summary() == "19 rows, 2 bad: 1 bad JSON (line 17), 1 empty output (row 18)"


def test_missing_and_empty_fields_name_the_users_column(tmp_path):
    rows = [{"prompt": "p", "completion": "c"}, {"prompt": "p"}, {"prompt": " ", "completion": "c2"}, {"prompt": "p", "completion": None}]
    report = run(tmp_path, "d.jsonl", jsonl(rows))
    assert report.problem_counts == {"missing_field": 2, "empty_field": 1}
    assert [(p.kind, p.row, p.field, p.message) for p in report.problems] == [
        ("missing_field", 2, "completion", "line 2: completion is missing"),
        ("empty_field", 3, "prompt", "line 3: prompt is empty"),
        ("missing_field", 4, "completion", "line 4: completion is missing"),
    ]
    assert report.summary() == "4 rows, 3 bad: 2 missing completion (rows 2, 4), 1 empty prompt (row 3)"


def test_json_array_with_mixed_types_per_column(tmp_path):
    rows = [GOOD, {"instruction": "q", "output": 42}, {"instruction": ["a"], "output": "x"}, {"instruction": "q", "output": {"t": 1}}]
    report = run(tmp_path, "mixed.json", json.dumps(rows))
    assert [(p.row, p.field, p.message) for p in by_kind(report, "wrong_type")] == [
        (2, "output", "record 2: output is a number (42), expected text"),
        (3, "instruction", "record 3: instruction is a list, expected text"),
        (4, "output", "record 4: output is an object, expected text"),
    ]
    assert report.valid_rows == 1


def test_non_object_lines(tmp_path):
    report = run(tmp_path, "d.jsonl", jsonl([GOOD, [1, 2], "\"just text\""]))
    assert [p.message for p in by_kind(report, "not_object")] == [
        "line 2 is a list, expected an object with named fields",
        "line 3 is text, expected an object with named fields",
    ]


def test_tool_role_and_missing_content(tmp_path):
    rows = [
        chat(("user", "hi"), ("assistant", "yo")),
        chat(("user", "weather?"), ("tool", "sunny"), ("assistant", "sunny")),
        chat(("user", "hi"), ("assistant", None)),
        chat(("user", ""), ("assistant", "x")),
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}, {"role": "assistant", "content": "x"}]},
    ]
    report = run(tmp_path, "c.jsonl", jsonl(rows))
    [tool] = by_kind(report, "unknown_role")
    assert (tool.row, tool.field) == (2, "messages[1].role")
    assert tool.message.startswith("line 2: messages[1] has role 'tool'; accepted roles are system, user, assistant")
    assert [(p.row, p.field, p.message) for p in by_kind(report, "missing_content")] == [
        (3, "messages[1].content", "line 3: messages[1] (assistant) has no 'content'"),
        (4, "messages[0].content", "line 4: messages[0] (user) has an empty 'content'"),
    ]
    assert by_kind(report, "wrong_type")[0].field == "messages[0].content"
    assert report.valid_rows == 1


def test_sharegpt_unknown_from(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
            {"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": "b"}]}]
    report = run(tmp_path, "s.jsonl", jsonl(rows))
    [p] = report.problems
    assert (p.kind, p.row, p.field) == ("unknown_role", 2, "conversations[1].from")


def test_turns_out_of_order(tmp_path):
    rows = [
        chat(("user", "a"), ("user", "b"), ("assistant", "c")),
        chat(("user", "a"), ("assistant", "b"), ("user", "c")),
        chat(("user", "a"), ("system", "s"), ("assistant", "b")),
        chat(("assistant", "a"), ("user", "b"), ("assistant", "c")),
        chat(("system", "s")),
        chat(("system", "s"), ("user", "a"), ("assistant", "b")),
    ]
    report = run(tmp_path, "o.jsonl", jsonl(rows))
    assert [(p.row, p.message) for p in by_kind(report, "turn_order")] == [
        (1, "line 1: messages[1] is 'user' where 'assistant' was expected; turns must alternate user/assistant"),
        (2, "line 2: the last message is 'user'; a conversation must end with an assistant reply"),
        (3, "line 3: a system message at position 1; only the first message may be a system prompt"),
        (4, "line 4: messages[0] is 'assistant' where 'user' was expected; turns must alternate user/assistant"),
        (5, "line 5: messages has no user/assistant turns"),
    ]
    assert report.valid_rows == 1


def test_duplicates_point_at_the_first_copy(tmp_path):
    rows = [GOOD, {"instruction": "other", "output": "a"}, GOOD, {"output": "a", "instruction": "q"}]
    report = run(tmp_path, "d.jsonl", jsonl(rows))
    assert [(p.row, p.message) for p in by_kind(report, "duplicate")] == [
        (3, "line 3 repeats line 1"), (4, "line 4 repeats line 1")]
    assert len(canonical(report)) == report.valid_rows == 2


def test_csv_ragged_row(tmp_path):
    report = run(tmp_path, "r.csv", "instruction,output\nq1,a1\nq2,a2,extra\nq3\nq4,a4\n")
    # problems are numbered by data row (a quoted CSV row can span lines), with the line it starts on
    assert [(p.row, p.message) for p in by_kind(report, "ragged_row")] == [
        (2, "row 2 (line 3) has 3 fields but the header has 2 (instruction, output)"),
        (3, "row 3 (line 4) has 1 fields but the header has 2 (instruction, output)"),
    ]
    assert report.valid_rows == 2 and report.summary().endswith("2 ragged row (rows 2, 3 (lines 3, 4))")


def test_csv_rows_are_numbered_by_row_when_a_value_spans_lines(tmp_path):
    body = 'instruction,output\n"a question\nover\nthree lines",an answer\nq2,\n'
    report = run(tmp_path, "m.csv", body)
    [p] = by_kind(report, "empty_field")
    assert p.row == 2 and p.message.startswith("row 2 (line 5): output is empty")


def test_inconsistent_label_types_drop_the_minority(tmp_path):
    rows = [{"text": f"t{i}", "label": i % 2} for i in range(8)] + [{"text": "odd", "label": "positive"}]
    report = run(tmp_path, "l.jsonl", jsonl(rows))
    [p] = report.problems
    assert (p.kind, p.row, p.field) == ("inconsistent_label", 9, "label")
    assert p.message == ("line 9: label 'positive' is text but most labels (8 of 9) are whole numbers; "
                         "make the labels consistent")
    assert report.stats["labels"] == {"0": 4, "1": 4}


def test_csv_labels_mixing_numbers_and_words(tmp_path):
    body = "".join(f"t{i},{i % 3}\n" for i in range(6)) + "x,neutral\n"
    report = run(tmp_path, "l.csv", "text,label\n" + body)
    assert [(p.kind, p.row) for p in report.problems] == [("inconsistent_label", 7)]  # data row 7, line 8


def test_wrong_label_types(tmp_path):
    rows = [{"text": "a", "label": "x"}, {"text": "b", "label": ["x", "y"]}, {"text": "c", "label": 0.5}, {"text": "d", "label": ""}]
    report = run(tmp_path, "l.jsonl", jsonl(rows))
    assert [(p.kind, p.row) for p in report.problems] == [("wrong_type", 2), ("wrong_type", 3), ("empty_field", 4)]
    assert "multi-label classification is not supported" in report.problems[0].message


def test_label_seen_once_among_thousands_is_a_kept_warning(tmp_path):
    rows = [{"text": f"t{i}", "label": "pos" if i % 2 else "neg"} for i in range(1200)]
    rows[500]["label"] = "postive"
    report = run(tmp_path, "l.jsonl", jsonl(rows))
    [p] = report.problems
    assert (p.kind, p.row, p.field) == ("rare_label", 501, "label")
    assert p.message == "line 501: label 'postive' appears only once in 1200 rows (a typo?); fix it or drop the row"
    assert report.valid_rows == 1200 and report.stats["labels"]["postive"] == 1
    assert report.summary() == "1200 rows, all valid; warnings: 1 rare label (row 501)"


def test_chat_messages_as_json_text_in_csv(tmp_path):
    cell = json.dumps([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]).replace('"', '""')
    report = run(tmp_path, "c.csv", f'messages\n"{cell}"\nnot json\n')
    assert report.valid_rows == 1 and by_kind(report, "wrong_type")[0].row == 2  # data row 2, line 3


def test_examples_are_capped_per_kind_but_counted(tmp_path):
    rows = [GOOD] + [{"instruction": "q", "output": ""}] * 12
    report = run(tmp_path, "d.jsonl", jsonl(rows))
    assert report.problem_counts == {"empty_field": 12} and len(report.problems) == 5
    assert report.summary() == "13 rows, 12 bad: 12 empty output (rows 2, 3, 4, 5, 6, …)"
