"""The Datasets tab's handlers, as the browser calls them: correct the mapping, see token lengths and
the rows as the model reads them, register with a split, browse versions, derive a corrected one."""
from __future__ import annotations

import json

import gradio as gr
import pytest

from models_db import BaseModel, Dataset, session_scope
from studio.tabs import datasets as tab

from tests.studio.test_datasets_helpers import jsonl, write

QA = [{"q": f"What is {i} plus one?", "a": f"The answer is {i + 1}.", "id": i} for i in range(12)]
DROPDOWNS = slice(1, 1 + len(tab.FIELD_NAMES))
pytestmark = pytest.mark.parametrize("backend", ["embedded"], indirect=True)  # the handlers, not the database


@pytest.fixture
def model_id(backend, tmp_path):
    """A base model row whose folder holds the tiny ChatML tokenizer (all the tab reads)."""
    from tests.tiny import build_tiny_tokenizer

    build_tiny_tokenizer(tmp_path / "tiny")
    with session_scope() as db:
        m = BaseModel(name="tiny", path=str(tmp_path / "tiny"), source="test")
        db.add(m)
        db.flush()
        return m.id


def field(outputs, name):
    """The dropdown update for one canonical field."""
    return outputs[DROPDOWNS][tab.FIELD_NAMES.index(name)]


def upload(*args) -> list:
    """on_upload's outputs without the per-file fields it resets (tested on their own below)."""
    return tab.on_upload(*args)[:-len(tab.PER_FILE)]


def edit(*args) -> list:
    return tab.edit_version(*args)[:-len(tab.PER_FILE)]


def values(outputs) -> list:
    return [d.value for d in outputs[DROPDOWNS]]


def test_unknown_columns_are_offered_for_a_mapping_by_hand(backend, tmp_path, model_id):
    path = write(tmp_path, "qa.jsonl", jsonl(QA))
    source, note, *out = upload(str(path), model_id, 512)
    assert source == {"path": str(path), "name": "qa.jsonl", "parent": None} and note == ""
    assert out[-5].startswith("**Cannot use this file.** qa.jsonl: the columns do not match any known format")
    out = tab.on_format(source, "instruction", model_id, 512)
    assert "Choose the format and the columns under **Column mapping** above" in out[-5]
    instr = field(out, "instruction")
    assert instr.visible and [c[0] for c in instr.choices] == ["— none —", "q", "a", "id"]
    assert not field(out, "text").visible
    picks = dict.fromkeys(tab.FIELD_NAMES, "") | {"instruction": "q", "output": "a"}
    out = tab.on_mapping(source, "instruction", model_id, 512, *picks.values())
    report, preview, hist, labels, rendered = out[-5:]
    assert out[0].value == "instruction" and "**12** rows, **12** usable. No problems found." in report
    assert "`instruction` ← `q`" in report and preview.visible and preview.value["headers"] == ["user", "assistant"]
    assert field(out, "instruction").value == "q" and field(out, "output").value == "a"
    # the histogram: the tiny model's token counts, every bin fitting in 512
    assert hist.visible and hist.value["data"] and all(row[2] == "fits" for row in hist.value["data"])
    assert not labels.visible
    # the rows as the model reads them: ChatML markers, the reply and its end marker highlighted
    assert "As tiny reads them, chat template applied." in rendered
    assert ('&lt;|im_start|&gt;user\nWhat is 0 plus one?&lt;|im_end|&gt;\n&lt;|im_start|&gt;assistant\n'
            '<mark class="trained">The answer is 1.&lt;|im_end|&gt;\n</mark>') in rendered


def test_a_short_max_seq_length_reports_rows_too_long(backend, tmp_path, model_id):
    path = write(tmp_path, "qa.jsonl", jsonl([{"instruction": r["q"], "output": r["a"]} for r in QA]))
    out = upload(str(path), model_id, 512)[2:]
    out = tab.on_mapping({"path": str(path), "name": "qa.jsonl"}, "instruction", model_id, 10, *values(out))
    assert "Cannot use this file" in out[-5] and "all 12 rows are longer than max_seq_length" in out[-5]
    assert field(out, "output").visible and field(out, "output").value == "output"  # still there to correct
    out = tab.on_mapping({"path": str(path), "name": "qa.jsonl"}, "instruction", model_id, 80, *values(out))
    assert "**12** usable" in out[-5] and sum(row[1] for row in out[-3].value["data"]) == 12
    assert out[-3].value["data"][-1][2] == "fits"


def test_classification_shows_the_label_distribution(backend, tmp_path):
    path = write(tmp_path, "cls.csv", "text,label\ngood,pos\nbad,neg\nfine,pos\n")
    out = upload(str(path), "", 512)[2:]
    hist, labels = out[-3:-1]
    assert out[0].value == "classification" and labels.visible
    assert labels.value["data"] == [["pos", 2], ["neg", 1]]
    assert not hist.visible and "No model picked" in out[-1]  # no histogram without a model


def test_register_with_a_split_then_correct_the_mapping(backend, tmp_path, model_id):
    path = write(tmp_path, "qa.jsonl", jsonl([r | {"instruction": r["q"], "output": r["a"]} for r in QA]))
    source, _, *out = upload(str(path), model_id, 512)
    status, table, picker, details = tab.register(source, "arith", "instruction", model_id, 512, 0.25, 3, None, False,
                                                  *values(out))
    assert status == "Registered data set **#1 arith** — 9 rows, 3 eval rows (instruction)."
    assert table.to_dict("records")[0] | {"created": None} == {
        "id": 1, "name": "arith", "format": "instruction", "rows": 9, "eval": 3, "dropped": 0, "parent": "",
        "file": "qa.jsonl", "created": None}
    assert picker.value == 1 and "3 eval rows, stored split: 25% held out by seed 3" in details
    assert "- jobs: none yet" in details and "`instruction` ← `instruction`" in details
    # correct the mapping of version 1: the kept upload is checked again, registering derives version 2
    path.unlink()
    source, note, *out = edit(1, model_id, 512)
    assert source["parent"] == 1 and "Correcting the mapping of **#1 arith**" in note
    assert field(out, "instruction").value == "instruction"
    picks = dict(zip(tab.FIELD_NAMES, values(out))) | {"instruction": "q", "output": "a"}
    out = tab.on_mapping(source, "instruction", model_id, 512, *picks.values())
    assert "`instruction` ← `q`" in out[-5]
    status, table, picker, details = tab.register(source, "", "instruction", model_id, 512, 0, 0, None, False,
                                                  *picks.values())
    assert status == "Registered data set **#2 arith** — 9 rows, 3 eval rows (instruction, a new version of #1)."
    assert "- derived from: #1 arith" in details and "`instruction` ← `q`" in details
    assert "- newer versions: #2" in tab.details_markdown(1)
    with session_scope() as db:
        assert json.loads((backend.home_abs / db.get(Dataset, 2).path).read_text().splitlines()[0])


def test_errors_reach_the_person_as_messages(backend):
    with pytest.raises(gr.Error, match="Upload a file first"):
        tab.register(None, "", "auto", "", 512, 0, 42, None, False, *[""] * len(tab.FIELD_NAMES))
    with pytest.raises(gr.Error, match="Pick a registered data set first"):
        edit(None, "", 512)
    assert upload(None, "", 512)[0] is None


def test_a_new_file_starts_from_a_clean_form(backend, tmp_path, model_id):
    # Registering one file and uploading the next kept its Name, the "Drop the bad rows" tick and the
    # "Registered #N" line: the next file could have been registered under the old name, dropping rows.
    path = write(tmp_path, "qa.jsonl", jsonl([{"instruction": r["q"], "output": r["a"]} for r in QA]))
    out = tab.on_upload(str(path), model_id, 512)
    fresh = dict(zip(tab.PER_FILE, out[-len(tab.PER_FILE):]))
    assert fresh == {"name": "", "eval_ratio": 0, "eval_seed": 42, "eval_file": None, "drop_bad": False, "status": ""}
    tab.register(out[0], "first", "instruction", model_id, 512, 0, 42, None, True, *values(out[2:]))
    out = tab.edit_version(1, model_id, 512)  # correcting a version starts clean too
    assert dict(zip(tab.PER_FILE, out[-len(tab.PER_FILE):]))["drop_bad"] is False


def test_the_tab_resets_every_per_file_field_on_upload(backend):
    with gr.Blocks() as demo:
        from studio.tab_state import Shell

        tab.render(Shell(tabs=None, job_id=None))
    upload_event = next(d for d in demo.fns.values() if d.name == "on_upload")
    ids = {c.elem_id for c in upload_event.outputs}
    assert {"dataset-name", "dataset-drop-bad", "dataset-status"} <= ids


def test_the_histogram_shows_the_rows_too_long_in_an_overflow_bin(backend, tmp_path, model_id):
    rows = [{"instruction": r["q"], "output": r["a"]} for r in QA]
    rows += [{"instruction": f"Tell long story {i}. " * 30, "output": "Once upon a time. " * 30} for i in range(2)]
    path = write(tmp_path, "mixed.jsonl", jsonl(rows))
    out = upload(str(path), model_id, 60)
    hist = out[-3]
    assert "**14** rows, **12** usable" in out[-5]
    assert hist.visible and hist.value["data"][-1] == ["> 60", 2, "too long"]
    assert sum(row[1] for row in hist.value["data"]) == 14


def test_problem_examples_are_cut_between_words(backend):
    assert tab.clip("short", 300) == "short"
    long = "; ".join(f"row {i}: output is empty" for i in range(40))
    clipped = tab.clip(long, 300)
    assert len(clipped) <= 302 and clipped.endswith(" …") and long.startswith(clipped[:-2])
    assert long[len(clipped) - 2] in " ;"  # the cut fell between words


def test_a_missing_role_is_worded_for_the_form_not_the_cli(backend, tmp_path):
    # The CLI's advice (`--map output="Right Reply"`) means nothing on this tab: the form names its own control
    header = ["Record ID", "Question", "Right Reply"] + [f"Extra {i}" for i in range(75)]
    path = write(tmp_path, "wide.csv", ",".join(header) + "\n" + ",".join(["x"] * len(header)) + "\n")
    report = upload(str(path), "", 512)[-5]
    assert "missing output" in report and "e.g. pick 'Right Reply' for output under Column mapping" in report
    assert "--map" not in report and "Extra 40" not in report
    assert report.endswith("Choose the format and the columns under **Column mapping** above.")


def css_rules() -> dict[str, str]:
    """static/style.css as {selector: declarations} (a selector list gives each selector the same body)."""
    import re

    from studio.app import STATIC

    text = re.sub(r"/\*.*?\*/", "", (STATIC / "style.css").read_text(), flags=re.S)
    return {sel.strip(): body for sels, body in re.findall(r"([^{}]+)\{([^}]*)\}", text) for sel in sels.split(",")}


def test_the_problems_table_and_the_rendered_rows_are_styled_to_be_read(backend):
    # The problems table squeezed its kind and count columns to a letter a line, and the rows as the model
    # reads them (chat template applied) ran off to the side instead of wrapping. The rules below match the
    # markup this tab writes: the report's elem_id, the rendered rows' classes.
    rules = css_rules()
    assert "white-space: pre-wrap" in rules[".dataset-rendered pre.model-view"]
    for column in (1, 2):  # problem kind, count: never wrapped a letter a line
        assert "white-space: nowrap" in rules[f"#dataset-report td:nth-child({column})"]
    assert "word-break: normal" in rules["#dataset-report td:nth-child(3)"]  # examples break between words
    html_ = tab.rendered_html([{"text": "abc", "label": "x"}], None, None)
    assert html_.startswith('<div class="dataset-rendered">') and '<pre class="model-view">' in html_
    with gr.Blocks() as demo:
        from studio.tab_state import Shell

        tab.render(Shell(tabs=None, job_id=None))
    assert "dataset-report" in {getattr(b, "elem_id", None) for b in demo.blocks.values()}
