"""Token lengths, the chat template and the too-long check, with tokenizer.json and jinja2 only."""
from __future__ import annotations

import json
import os

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from studio.datasets import DatasetError, ingest, token_lengths, too_long
from studio.datasets.template import ChatTemplate
from studio.datasets.tokens import LengthLimit, ModelText, histogram, render_row

from tests.studio.test_datasets_helpers import by_kind, canonical, jsonl, run, write
from tests.tiny import CHATML_TEMPLATE


def word_tokenizer(tmp_path):
    """A whitespace word-level tokenizer: one token per word, so counts are easy to check."""
    vocab = {"[UNK]": 0} | {w: i + 1 for i, w in enumerate(["a", "b", "c", "d", "e", "f", "hello", "world"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return path


def words(tmp_path, **kwargs) -> ModelText:
    return ModelText(word_tokenizer(tmp_path), **kwargs)


def test_without_a_template_chat_rows_count_contents_plus_overhead_per_turn(tmp_path):
    rows = [{"instruction": "a b c", "output": "d e"}, {"instruction": "hello", "input": "world", "output": "f"}]
    report = run(tmp_path, "i.jsonl", jsonl(rows))
    lengths = token_lengths(report.canonical_path, words(tmp_path, overhead=3))
    assert lengths == [5 + 2 * 3, 3 + 2 * 3]
    assert too_long(lengths, 9) == [1]


def test_text_classification_preference_and_limit(tmp_path):
    tok = words(tmp_path, overhead=1)
    text = run(tmp_path, "t.txt", "a b c\nhello world\nzzz qqq rrr sss\n")
    assert token_lengths(text.canonical_path, tok) == [3, 2, 4]
    assert token_lengths(text.canonical_path, tok, limit=2) == [3, 2]
    pref = run(tmp_path, "p.jsonl", jsonl([{"prompt": "a b", "chosen": "c", "rejected": "d e f"}]))
    assert token_lengths(pref.canonical_path, tok) == [2 + 3 + 2]
    with_eos = ModelText(word_tokenizer(tmp_path), tokens={"eos_token": "</s>"})
    assert token_lengths(text.canonical_path, with_eos) == [4, 3, 5]  # the worker appends the end-of-text token


def test_every_row_too_long(tmp_path):
    rows = [{"text": "a b c d e f"} for _ in range(3)]
    path = tmp_path / "c.jsonl"
    path.write_text(jsonl(rows))
    lengths = token_lengths(path, words(tmp_path))
    assert too_long(lengths, 4) == [1, 2, 3]
    assert json.loads(path.read_text().splitlines()[0]) == rows[0]


# -- the chat template, rendered without transformers -------------------------------------------

RICH_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('bad role') }}{% endif %}{% set ns = namespace(n=loop.index) %}"
    "[{{ m['role'] | upper }} {{ ns.n }}]{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] | trim }}"
    "{{ eos_token }}{% endgeneration %}{% else %}{{ m['content'] | tojson }}{% endif %}\n"
    "{% if loop.last %}{% break %}{% endif %}{% endfor %}{% if add_generation_prompt %}[ASSISTANT]{% endif %}"
)
CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi \"there\""},
                {"role": "assistant", "content": " Hello "}, {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Bye!"}]


@pytest.mark.parametrize("template", [CHATML_TEMPLATE, RICH_TEMPLATE])
def test_chat_template_renders_like_transformers(tmp_path, template):
    from tests.tiny import build_tiny_tokenizer

    hf = build_tiny_tokenizer(tmp_path / "tok")
    hf.chat_template = template
    ours = ChatTemplate(template, {"bos_token": hf.bos_token, "eos_token": hf.eos_token})
    for gen in (False, True):
        for n in (2, 3, 5):
            assert ours.render(CONVERSATION[:n], gen) == hf.apply_chat_template(
                CONVERSATION[:n], tokenize=False, add_generation_prompt=gen)


def test_template_is_read_from_the_model_folder_and_sandboxed(tmp_path):
    from tests.tiny import build_tiny_tokenizer

    build_tiny_tokenizer(tmp_path)
    model = ModelText.from_model_dir(tmp_path)
    assert model.template.source == CHATML_TEMPLATE and model.eos == "<|im_end|>"
    text, spans = model.render({"messages": CONVERSATION[1:3]})
    assert text == "<|im_start|>user\nHi \"there\"<|im_end|>\n<|im_start|>assistant\n Hello <|im_end|>\n"
    assert [text[a:b] for a, b in spans] == [" Hello <|im_end|>\n"]
    with pytest.raises(Exception, match="unsafe|underscore|cannot set"):
        ChatTemplate("{% set ns = namespace() %}{% set ns.__class__ = 1 %}").render([])
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(DatasetError, match="has no tokenizer.json"):
        ModelText.from_model_dir(tmp_path)


def test_render_row_marks_what_is_trained():
    text, spans = render_row({"messages": CONVERSATION[1:3]})
    assert text == 'user: Hi "there"\nassistant:  Hello \n' and [text[a:b] for a, b in spans] == [" Hello "]
    assert render_row({"text": "abc"}, eos="<e>") == ("abc<e>", [(0, 6)])
    assert render_row({"text": "abc", "label": "x"}) == ("abc", [])


def test_histogram_bins_the_rows_that_fit_and_one_overflow_bin_past_the_limit():
    bins = histogram([1, 5, 10, 512, 513, 600, 7000], 512, bins=10)
    assert sum(b["rows"] for b in bins) == 7
    fits = [b for b in bins if b["fits"]]
    assert fits[-1]["tokens"].endswith("-512") and all(b["fits"] for b in bins[:-1])
    assert bins[-1] == {"tokens": "> 512", "rows": 3, "fits": False}  # a 7000-token row stretches nothing
    assert [b["tokens"] for b in histogram([0, 3], None, bins=2)] == ["0-1", "2-3"]
    assert [(b["tokens"], b["rows"]) for b in histogram([31, 33, 34, 34], 512, bins=4)] == [
        ("31-31", 1), ("32-32", 0), ("33-33", 1), ("34-34", 2)]  # from the shortest row, not from 0
    assert histogram([900], 512) == [{"tokens": "> 512", "rows": 1, "fits": False}]
    assert histogram([], 10) == []


# -- the too-long check in the intake ----------------------------------------------------------

def test_rows_too_long_for_the_model_are_problems(tmp_path):
    limit = LengthLimit(words(tmp_path), 4, "words")
    rows = [{"text": "a b"}, {"text": "a b c d e"}, {"text": "c d e f"}]
    report = run(tmp_path, "t.jsonl", jsonl(rows), length_limit=limit)
    [p] = by_kind(report, "too_long")
    assert p.row == 2 and p.message == ("line 2 is 5 tokens with words's tokenizer and chat template, over "
                                        "max_seq_length 4; shorten it, raise max_seq_length or drop the row")
    assert canonical(report) == [rows[0], rows[2]] and report.stats["rows"] == 2
    unchecked = run(tmp_path, "t.jsonl", jsonl(rows))
    assert unchecked.valid_rows == 3 and unchecked.content_hash != report.content_hash  # the check decides the rows
    assert report.summary() == "3 rows, 1 bad: 1 longer than max_seq_length (row 2)"


def test_every_row_too_long_leaves_nothing(tmp_path):
    limit = LengthLimit(words(tmp_path), 2, "words")
    path = write(tmp_path, "long.jsonl", jsonl([{"text": "a b c"}, {"text": "d e f"}]))
    with pytest.raises(DatasetError) as info:
        ingest(path, original_name="long.jsonl", out_dir=tmp_path / "out", length_limit=limit)
    assert str(info.value) == ("long.jsonl has no usable rows: all 2 rows are longer than max_seq_length for the "
                               "chosen model (rows 1, 2). Fix the file and upload it again.")
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []
