"""A classification version in the playground: it answers with its predicted label and every label's
probability, the same as the version's own forward pass; prompts sampled from its data set are texts."""
from __future__ import annotations

import pytest
import torch

from studio import generations
from tests.worker.test_seq_cls import encode, reload, run, studio, submit  # noqa: F401 - studio is a fixture
from worker import generate


@pytest.fixture
def sent(monkeypatch):
    ids = []
    monkeypatch.setattr(generations, "send", lambda gid: ids.append(gid) or True)
    return ids


def test_classification_version_answers_with_label_and_probabilities(studio, sent, tiny_bert_dir):  # noqa: F811
    generate.CACHE.clear()
    version = run(submit(studio, "bert", "lora", max_steps=4, eval_steps=4, save_steps=4))
    prompts, where = generations.sample_prompts(version.id, 3)
    assert len(prompts) == 3 and "eval split" in where and all(isinstance(p.prompt, str) for p in prompts)
    assert {p.reference for p in prompts} <= {"good", "bad"}

    rows = generations.request([version.id], [p.prompt for p in prompts], {"max_new_tokens": 4})
    for row in rows:
        assert generate.run_generation(row["id"]) == "done"
    done = generations.status([r["id"] for r in rows])
    model = reload(version, tiny_bert_dir)
    probs = torch.softmax(model(**encode(tiny_bert_dir, [{"text": p.prompt} for p in prompts])).logits.float(), -1)
    for row, expected in zip(done, probs):
        assert row["state"] == "done", row["error"]
        assert set(row["probabilities"]) == {"bad", "good"}
        assert row["output"] == version.config["labels"][int(expected.argmax())]
        assert row["probabilities"][row["output"]] == pytest.approx(float(expected.max()), abs=1e-4)
        assert row["output"] in generations.display(row) and "p=" in generations.display(row)
