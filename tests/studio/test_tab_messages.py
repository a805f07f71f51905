"""What the tabs say when a person does something odd, found by walking the studio in a browser: the
message names the field and what to do, an empty list says how to fill it, and nothing shows an
exception's class name."""
from __future__ import annotations

import gradio as gr
import pytest

from studio.tabs import datasets, jobs, side_by_side, train, version_jobs, versions
from tests.studio import test_advise_cli as cli_tests

studio = cli_tests.studio  # a studio with the tiny Llama and a 40-row data set


def form(**changes) -> list:
    """The Train form's values as rendered (every knob's default), with ``changes`` by key."""
    return [changes.get(key, knob.default) for _, key, knob in train.SPECS]


def test_train_numbers_leave_range_checks_to_the_spec_which_names_the_field(studio):
    # Gradio's own check ("Value -5 is less than minimum value -1") names no field and skips the handler
    field = train.component_for("max_steps", int, -1, "help")
    assert isinstance(field, gr.Number) and field.minimum is None and field.maximum is None
    line = train.cost(studio["tiny-llama"], studio["dataset"], "lora", *form(max_steps=-5))
    assert line.startswith("Cannot estimate yet: max_steps: -5 is outside [-1, 10000000].")
    with pytest.raises(gr.Error, match=r"per_device_train_batch_size: 0 is outside \[1, 4096\]"):
        train.start(studio["tiny-llama"], studio["dataset"], "lora", None, None, "n1",
                    *form(per_device_train_batch_size=0))


def test_method_errors_name_the_form_field_not_the_cli_flag(studio):
    with pytest.raises(gr.Error) as e:
        train.start(studio["tiny-llama"], studio["dataset"], "lora", None, None, "n2", *form(r=0))
    assert "Set the r field to 1 or higher" in e.value.message and "--set" not in e.value.message
    assert "Set the r field to" in train.cost(studio["tiny-llama"], None, "lora", *form(r=0))
    # a module the model does not have is said in the cost line before Start, not estimated as 0 trainable
    line = train.cost(studio["tiny-llama"], None, "lora", *form(target_modules="nonexistent_mod"))
    assert line.startswith("Cannot estimate yet: lora: target_modules names nonexistent_mod")
    assert "Set the target_modules field to one of attention" in line
    assert train.for_form("lora: target_modules names x. Set --set target_modules= to one of attention or "
                          "a comma list") == "lora: target_modules names x. Set the target_modules field to one " \
                                             "of attention or a comma list"


def test_combine_with_fewer_than_two_versions_says_so_instead_of_dividing_by_zero():
    for parents in (None, [], [3], [3, 3]):
        with pytest.raises(gr.Error, match="Pick 2 or more LoRA versions"):
            version_jobs.start_combine(parents, "", "linear", 0.5, "")


def test_cancel_says_what_happened_to_the_job():
    assert jobs.cancel_message(3, "cancelled") == "Job 3 is cancelled."
    assert jobs.cancel_message(3, "running") == "Cancelling job 3: its worker stops it at the next step."
    assert jobs.cancel_message(3, "succeeded") == "Job 3 already succeeded: there is nothing to cancel."


def test_side_by_side_settings_out_of_range_name_the_setting():
    with pytest.raises(gr.Error, match="max_new_tokens 0 is out of range: choose 1 to 4096"):
        side_by_side.run([1, 2], False, "What is 2 plus 1?", None, 0, 0, 1.0, 0)


class _Problem:
    def __init__(self, kind: str, message: str):
        self.kind, self.message, self.row = kind, message, 3


class _Report:
    """An intake report of a CSV with a ragged row and an empty field (the fields report_markdown reads)."""

    def __init__(self):
        self.original_name, self.file_type, self.format = "bad.csv", "csv", "instruction"
        self.mapping, self.total_rows, self.valid_rows = {"instruction": "q"}, 3, 1
        self.problem_counts = {"ragged_row": 1, "empty_field": 1}
        self.problems = [_Problem("ragged_row", "line 3 has 1 fields but the header has 2 (q, a)"),
                         _Problem("empty_field", "line 4: q is empty")]


def test_the_intake_report_reads_as_words_with_each_row_named_once():
    text = datasets.report_markdown(_Report())
    assert "| ragged row | 1 | line 3 has 1 fields but the header has 2 (q, a) |" in text
    assert "| empty field | 1 | line 4: q is empty |" in text
    assert "row 3: line 3" not in text and "ragged_row" not in text


def test_histogram_bins_one_token_wide_are_labelled_with_that_length():
    df = datasets.histogram_frame([30, 30, 31, 32, 32, 32], None)
    assert list(df.columns) == ["tokens", "rows", "length"]  # the legend reads "length: fits / too long"
    assert list(df["tokens"]) == ["30", "31", "32"] and set(df["length"]) == {"fits"}
    wide = datasets.histogram_frame(list(range(10, 200)), 100)
    assert "-" in wide["tokens"].iloc[0] and set(wide["length"]) == {"fits", "too long"}


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
def test_empty_lists_say_how_to_fill_them(backend):
    # no preview table with made-up headers before a file is checked
    out = datasets.inspect(None, "auto", None, "", 512)
    preview = out[-4]
    assert isinstance(preview, gr.Dataframe) and preview.visible is False
    assert "No data set registered yet" in datasets.details_markdown(None)
    assert "No model versions yet" in versions.show_version(None)[0]
    assert "Train" in versions.version_details(None)


def test_compare_with_one_version_asks_for_one_more():
    note, _metrics, _config, chart = versions.compare_view([4], "step")
    assert note == "Pick one more version to compare with #4 (up to 4 in all)." and chart is None
    assert versions.compare_view([], "step")[0].startswith("Pick 2 to 4 versions")
