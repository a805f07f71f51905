"""The other side of an export's own check: files that do not behave like the trained model are marked "not
verified" with the reason (another model's weights, a lost end of turn, a lost chat template), and the CLI's
summary and the Versions tab's line say so. Every format's verified record is tested in test_export_formats.py and
test_gguf_export.py; here the comparison in worker/fidelity.py must also be able to say no."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from models_db import BaseModel
from studio import exports
from tests.tiny import build_tiny_llama
from worker import fidelity

PROMPTS = [[{"role": "user", "content": q}] for q in fidelity.FALLBACK]
TRUST = BaseModel(trust_remote_code=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny Llama as the 'trained model', its reference replies to the stock prompts, and a copy on disk."""
    folder = build_tiny_llama(tmp_path_factory.mktemp("trained"))
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return folder, tok, fidelity.reference(model, tok, PROMPTS)


def check(folder, ref, fmt: str = "merged-fp16") -> dict:
    return fidelity.check_folder(folder, exports.FORMATS[fmt], ref, PROMPTS, TRUST)


def test_the_same_model_is_verified_and_another_model_is_not(trained, tmp_path):
    folder, _, ref = trained
    same = check(folder, ref)
    assert same["verified"] is True and same["token_agreement"] == 1.0 and same["reason"] is None
    other = check(build_tiny_llama(tmp_path / "other", seed=1), ref)
    assert other["verified"] is False and other["token_agreement"] < 0.9, other
    assert other["reason"].startswith(f"greedy-token agreement {other['token_agreement']:.1%} is below the 90% "
                                      "this format allows")
    assert fidelity.summary(other).startswith(f"Not verified: {other['reason']} (greedy-token agreement")
    from studio.tabs import versions as tab

    assert tab.fidelity_line(other) == f"✗ **Not verified**: {other['reason']}."
    assert tab.fidelity_line(same).startswith("✓ **Verified**: greedy-token agreement 100.0%")


def test_a_lost_end_of_turn_is_not_verified(trained, tmp_path):
    folder, tok, ref = trained
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    other_eos = next(i for i in range(len(tok)) if i not in ref.eos_ids)
    model.config.eos_token_id = model.generation_config.eos_token_id = other_eos
    model.save_pretrained(tmp_path / "lost-eos")
    tok.save_pretrained(tmp_path / "lost-eos")
    record = check(tmp_path / "lost-eos", ref, "merged")
    assert json.loads((tmp_path / "lost-eos" / "generation_config.json").read_text())["eos_token_id"] == other_eos
    assert record["verified"] is False and record["stops_at_eos"] is False and record["token_agreement"] == 1.0
    assert record["reason"] == f"the export does not stop at token id(s) {ref.eos_ids} (the trained model's end of turn)"


def test_a_lost_chat_template_is_not_verified(trained, tmp_path):
    folder, _, ref = trained
    assert ref.chat_template
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.save_pretrained(tmp_path / "no-template")
    tok = AutoTokenizer.from_pretrained(folder)  # not the fixture's: the other tests save theirs with its template
    tok.chat_template = None
    tok.save_pretrained(tmp_path / "no-template")
    (tmp_path / "no-template" / "chat_template.jinja").unlink(missing_ok=True)
    record = check(tmp_path / "no-template", ref, "merged")
    assert record == {"verified": False, "chat_template": False,
                      "reason": "the export's tokenizer renders the prompts to other token ids (its chat template or "
                                "vocabulary changed on the way out)"}
