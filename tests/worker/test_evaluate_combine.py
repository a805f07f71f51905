"""Evaluation per version x data set, and combining LoRA versions, through the real jobs: submitted as the
CLI does, claimed, and run by ``worker.job_process.main`` in this process on tiny models.

The figures are checked against a direct computation on the same rows (the model run by hand), the
combination against its parents' outputs, and the lineage three generations deep."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import select
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq

from models_db import Dataset, Evaluation, Job, ModelVersion, VersionParent, session_scope
from models_db import jobs as jobq
from models_db import queries as q
from studio import combine, evaluations, operations, versions
from studio.datasets.split import Split
from studio.jobspec import SpecError, build_train_spec
from tests.backends import backend_env, in_process
from worker import data, job_process, lineage
from worker.data import IGNORE
from worker.recipes.seq_cls import load_classifier

# one batch holds every row (training and evaluation), so the Trainer's eval loss is one forward pass
TRAIN = {"max_steps": 4, "learning_rate": 1e-2, "per_device_train_batch_size": 64, "per_device_eval_batch_size": 64,
         "eval_split": 0.1, "logging_steps": 1, "eval_steps": 4, "save_steps": 4, "r": 4, "lora_alpha": 8,
         "lora_dropout": 0.0}
LORA_KEYS = ("r", "lora_alpha", "lora_dropout")


@dataclass
class Studio:
    root: Path
    llama: int
    bert: int
    llama_dir: str
    bert_dir: str
    sums: int  # instruction data, stored eval split
    doubles: int  # instruction data, no split
    cls: int  # classification good/bad, stored eval split
    other_labels: int  # classification yes/no


def _rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _import(src, name: str) -> tuple[int, str]:
    from worker.importer import register

    return register(src, name)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_llama_dir, tiny_bert_dir):
    from models_db.migrate import upgrade

    root = tmp_path_factory.mktemp("studio")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp, backend_env("embedded", root / "home") as env, in_process(mp, env):
        upgrade()
        llama, llama_dir = _import(tiny_llama_dir, "tiny-llama")
        bert, bert_dir = _import(tiny_bert_dir, "tiny-bert")
        sums = _rows(root / "sums.jsonl", [{"instruction": f"What is {i} plus 1?", "output": f"The answer is {i + 1}."}
                                           for i in range(40)])
        doubles = _rows(root / "doubles.jsonl", [{"instruction": f"Double {i}.", "output": f"{2 * i} it is."}
                                                 for i in range(24)])
        words = ["quick fox", "lazy dog", "the capital", "a haiku", "hello world", "autumn leaves"]
        cls = _rows(root / "cls.jsonl", [{"text": f"{'positive' if i % 2 else 'negative'} {words[i % 6]} {i}",
                                          "label": "good" if i % 2 else "bad"} for i in range(48)])
        other = _rows(root / "other.jsonl", [{"text": f"text {i}", "label": "yes" if i % 2 else "no"} for i in range(8)])
        ids = [operations.add_dataset(p, split=s)[0].id for p, s in
               ((sums, Split(ratio=0.25)), (doubles, None), (cls, Split(ratio=0.25)), (other, None))]
        yield Studio(root, llama, bert, llama_dir, bert_dir, *ids)
    torch.set_num_threads(threads)


def run(job_id: int) -> Job:
    """Claim a job and run its child entry point here, as a worker's training process would."""
    with session_scope() as db:
        claim = jobq.claim(db, job_id, "test-worker", lease_seconds=600)
    assert claim is not None
    assert job_process.main(job_id, claim.fence) == 0
    with session_scope() as db:
        job = db.get(Job, job_id)
        assert job.state == "succeeded", job.error
        db.expunge(job)
        return job


def train(studio: Studio, dataset: int, model: str = "llama", parent: int | None = None, **settings) -> ModelVersion:
    method = settings.pop("method", "lora")
    defaults = TRAIN if method == "lora" else {k: v for k, v in TRAIN.items() if k not in LORA_KEYS}
    spec = build_train_spec(model_id=getattr(studio, model), dataset_id=dataset, method=method,
                            settings={**defaults, **settings}, parent_version_id=parent)
    job, _ = operations.submit_train(spec)
    job = run(job.id)
    with session_scope() as db:
        v = db.get(ModelVersion, job.result["version_id"])
        db.expunge(v)
        return v


def evaluation(version_id: int, dataset_id: int) -> Evaluation | None:
    with session_scope() as db:
        row = db.scalar(select(Evaluation).where(Evaluation.version_id == version_id,
                                                 Evaluation.dataset_id == dataset_id))
        if row is not None:
            db.expunge(row)
        return row


def evaluate_jobs(version_id: int) -> list[Job]:
    with session_scope() as db:
        jobs = [j for j in db.scalars(select(Job).where(Job.kind == "evaluate"))
                if j.config.get("version_id") == version_id]
        db.expunge_all()
        return jobs


def reload_lm(studio: Studio, version_id: int):
    with session_scope() as db:
        chain = lineage.chain(db, version_id)
        db.expunge_all()
    base = AutoModelForCausalLM.from_pretrained(studio.llama_dir, dtype=torch.float32)
    return lineage.load_chain(base, chain, last="inference").eval()


def dataset_rows(dataset_id: int, eval_split: bool) -> list[dict]:
    from studio.settings import get_settings

    with session_scope() as db:
        path = get_settings().home_abs / db.get(Dataset, dataset_id).path
    path = data.stored_eval(path) if eval_split else path
    return [json.loads(line) for line in path.read_text().splitlines()]


def direct_lm_loss(model, tokenizer, rows: list[dict]) -> float:
    """The mean response-token loss over one padded batch of ``rows``, computed by hand."""
    encoded = data.tokenize_fn(tokenizer, 512)({"messages": [r["messages"] for r in rows]})
    features = [{"input_ids": i, "attention_mask": a, "labels": la}
                for i, a, la in zip(encoded["input_ids"], encoded["attention_mask"], encoded["labels"])]
    batch = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE)(features)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=IGNORE).item()


# ------------------------------------------------------------------------------ evaluation

def test_training_records_its_final_evaluation_on_the_stored_split(studio):
    v = train(studio, studio.sums)
    row = evaluation(v.id, studio.sums)
    assert row is not None and row.split == "eval" and row.rows == 10  # 0.25 of 40 rows, stored with the data set
    assert row.metrics["eval_loss"] == pytest.approx(v.metrics["eval_loss"])  # the recipe's own figure
    assert row.metrics["perplexity"] == pytest.approx(math.exp(row.metrics["eval_loss"]))
    assert row.job_id == v.job_id and evaluate_jobs(v.id) == []  # no second pass

    # the same figure by hand: the version rebuilt from disk, the stored eval rows, one padded batch
    tokenizer = AutoTokenizer.from_pretrained(studio.llama_dir)
    loss = direct_lm_loss(reload_lm(studio, v.id), tokenizer, dataset_rows(studio.sums, eval_split=True))
    assert row.metrics["eval_loss"] == pytest.approx(loss, rel=1e-4)


def test_without_a_stored_split_an_evaluate_job_measures_the_training_rows(studio):
    v = train(studio, studio.doubles)
    assert evaluation(v.id, studio.doubles) is None
    (job,) = evaluate_jobs(v.id)  # queued by the training job's success
    assert job.state == "queued" and job.config == {"version_id": v.id, "dataset_id": studio.doubles}
    run(job.id)
    row = evaluation(v.id, studio.doubles)
    assert row.split == "train" and row.rows == 24 and row.job_id == job.id
    tokenizer = AutoTokenizer.from_pretrained(studio.llama_dir)
    loss = direct_lm_loss(reload_lm(studio, v.id), tokenizer, dataset_rows(studio.doubles, eval_split=False))
    assert row.metrics["eval_loss"] == pytest.approx(loss, rel=1e-4)
    assert row.metrics["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)

    # on another data set picked later: a second row for the same version; again: replaced, not added
    job, created = evaluations.submit_evaluate(v.id, studio.sums)
    twin, twin_created = evaluations.submit_evaluate(v.id, studio.sums)
    assert created and (twin.id, twin_created) == (job.id, False)  # one already queued is reused
    run(job.id)
    first = evaluation(v.id, studio.sums)
    assert first.split == "eval" and first.rows == 10
    again, _ = evaluations.submit_evaluate(v.id, studio.sums)
    run(again.id)
    with session_scope() as db:
        rows = db.scalars(select(Evaluation).where(Evaluation.version_id == v.id)).all()
        assert sorted(r.dataset_id for r in rows) == sorted([studio.doubles, studio.sums])
    assert evaluation(v.id, studio.sums).job_id == again.id
    assert evaluation(v.id, studio.sums).metrics["eval_loss"] == pytest.approx(first.metrics["eval_loss"])


def test_classifier_evaluation_matches_its_predictions(studio):
    v = train(studio, studio.cls, model="bert", max_steps=20, learning_rate=5e-3)
    recorded = evaluation(v.id, studio.cls)  # from the recipe's final evaluation
    assert recorded.split == "eval" and recorded.rows == 12 and set(recorded.metrics) == {"accuracy", "f1", "eval_loss"}
    job, _ = evaluations.submit_evaluate(v.id, studio.cls)  # the evaluate job gives the same figures
    run(job.id)
    row = evaluation(v.id, studio.cls)
    assert row.job_id == job.id
    for k in ("accuracy", "f1", "eval_loss"):
        assert row.metrics[k] == pytest.approx(recorded.metrics[k], abs=1e-5)

    # predictions by hand on the stored eval rows
    rows = dataset_rows(studio.cls, eval_split=True)
    tokenizer = AutoTokenizer.from_pretrained(studio.bert_dir)
    with session_scope() as db:
        chain = lineage.chain(db, v.id)
        db.expunge_all()
    model = lineage.load_chain(load_classifier(studio.bert_dir, v.config["labels"], tokenizer), chain,
                               last="inference").eval()
    batch = tokenizer([r["text"] for r in rows], padding=True, return_tensors="pt")
    with torch.no_grad():
        predicted = model(**batch).logits.argmax(-1).numpy()
    actual = np.array([v.config["labels"].index(r["label"]) for r in rows])
    assert row.metrics["accuracy"] == pytest.approx(float(np.mean(predicted == actual)))
    f1 = [2 * np.sum((predicted == c) & (actual == c)) / (np.sum(predicted == c) + np.sum(actual == c))
          for c in np.union1d(predicted, actual)]
    assert row.metrics["f1"] == pytest.approx(float(np.mean(f1)))


def test_a_bad_pairing_is_refused_at_submit(studio):
    lm = train(studio, studio.sums, max_steps=1)
    with pytest.raises(SpecError, match=rf"dataset {studio.cls} is classification data, but version {lm.id} is a "
                                        r"causal_lm model.*instruction or chat or text"):
        evaluations.submit_evaluate(lm.id, studio.cls)
    with session_scope() as db:
        classifier = db.scalars(select(ModelVersion).where(ModelVersion.base_model_id == studio.bert)).first()
    if classifier is None:
        classifier = train(studio, studio.cls, model="bert", max_steps=1)
    with pytest.raises(SpecError, match=r"classifies bad, good but dataset \d+ has the labels no, yes"):
        evaluations.submit_evaluate(classifier.id, studio.other_labels)
    with pytest.raises(SpecError, match="version 9999 does not exist"):
        evaluations.submit_evaluate(9999, studio.sums)
    with pytest.raises(SpecError, match="dataset 9999 does not exist"):
        evaluations.submit_evaluate(lm.id, 9999)


# ------------------------------------------------------------------------------ combining

def logits(model, vocab: int) -> torch.Tensor:
    ids = torch.randint(4, vocab, (3, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


@pytest.fixture(scope="module")
def pair(studio):
    """Two LoRA versions of the tiny Llama with equal ranks, on two data sets."""
    return train(studio, studio.sums, learning_rate=2e-2), train(studio, studio.doubles, learning_rate=2e-2)


@pytest.mark.parametrize("how", ["linear", "ties"])
def test_combine_two_lora_versions(how, studio, pair):
    a, b = pair
    job, spec = combine.submit_combine([a.id, b.id], weights="0.6,0.4" if how == "linear" else None, how=how,
                                       density=0.5)
    assert spec.weights == ([0.6, 0.4] if how == "linear" else [1.0, 1.0])
    job = run(job.id)
    vid = job.result["version_id"]
    with session_scope() as db:
        combined = db.get(ModelVersion, vid)
        assert combined.method == "lora" and combined.parent_id == a.id and combined.dataset_id is None
        assert combined.config["combination"]["combination"] == how
        rows = db.scalars(select(VersionParent).where(VersionParent.version_id == vid)).all()
        assert sorted((r.parent_id, r.weight) for r in rows) == sorted(zip([a.id, b.id], spec.weights))
        assert [v.id for v in lineage.chain(db, vid)] == [vid]  # its adapter applies to the base itself
    assert (lineage.artifact(combined) / "adapter_model.safetensors").is_file()

    # it loads, and its outputs are neither parent's
    vocab = AutoTokenizer.from_pretrained(studio.llama_dir).__len__()
    out = logits(reload_lm(studio, vid), vocab)
    for parent in (a, b):
        assert not torch.allclose(out, logits(reload_lm(studio, parent.id), vocab), atol=1e-4)
    assert not torch.allclose(out, logits(AutoModelForCausalLM.from_pretrained(studio.llama_dir), vocab), atol=1e-4)

    # evaluated on each parent's data set, shown in the comparison
    assert evaluation(vid, studio.sums).split == "eval" and evaluation(vid, studio.doubles).split == "train"
    table = versions.compare([a.id, b.id, vid])["evaluations"]
    by_dataset = {r["dataset_id"]: r["cells"] for r in table}
    assert by_dataset[studio.sums][2]["metrics"]["eval_loss"] == pytest.approx(
        evaluation(vid, studio.sums).metrics["eval_loss"])
    assert by_dataset[studio.sums][0] is not None  # version a's own evaluation on its data set


def test_lineage_three_generations_and_delete(studio, pair):
    a, b = pair
    job, _ = combine.submit_combine([a.id, b.id], weights="0.5,0.5", how="linear", name="both skills")
    combined = run(job.id).result["version_id"]
    grandchild = train(studio, studio.sums, parent=combined, max_steps=2)
    with session_scope() as db:
        assert [v.id for v in lineage.chain(db, grandchild.id)] == [combined, grandchild.id]
        assert [(p.id, w) for p, w in q.parents(db, grandchild.id)] == [(combined, 1.0)]  # its VersionParent row
        assert [v.id for v in q.ancestors(db, grandchild.id)] == [combined, a.id, b.id]
        assert {v.id for v in q.descendants(db, b.id)} >= {combined, grandchild.id}
        shown = versions.lineage(db, combined)
    assert [(p["id"], p["weight"]) for p in shown["parents"]] == [(a.id, 0.5), (b.id, 0.5)]
    graph = versions.lineage_mermaid(grandchild.id)
    assert f'V{a.id} -- "x 0.5" --> V{combined}' in graph and f'V{b.id} -- "x 0.5" --> V{combined}' in graph
    assert f'V{combined} -- "sft" --> V{grandchild.id}' in graph
    assert f"D{studio.sums} -.-> V{a.id}" in graph and f"D{studio.doubles} -.-> V{b.id}" in graph

    with pytest.raises(SpecError, match=rf"version {b.id} has \d+ descendant.*#{combined}.*#{grandchild.id}"):
        versions.delete(b.id)
    plan = versions.delete(combined, cascade=True)
    assert plan.ids == [grandchild.id, combined]
    with session_scope() as db:
        assert db.scalars(select(VersionParent).where(VersionParent.version_id.in_(plan.ids))).all() == []
        assert db.scalars(select(Evaluation).where(Evaluation.version_id.in_(plan.ids))).all() == []
        assert db.get(ModelVersion, a.id) is not None and db.get(ModelVersion, b.id) is not None


def test_combinations_that_cannot_work_are_refused(studio, pair):
    a, b = pair
    with pytest.raises(SpecError, match="at least 2 different versions"):
        combine.submit_combine([a.id, a.id])
    with pytest.raises(SpecError, match="2 weight\\(s\\) for 3 versions|3 weight"):
        combine.submit_combine([a.id, b.id, 9999], weights="0.5,0.5")
    with pytest.raises(SpecError, match="combination 'mean'"):
        combine.submit_combine([a.id, b.id], how="mean")
    wide = train(studio, studio.sums, max_steps=1, r=8)
    with pytest.raises(SpecError, match=rf"linear needs adapters of equal rank.*#{wide.id} r=8.*use --how cat or svd"):
        combine.submit_combine([a.id, wide.id], how="linear")
    ia3 = train(studio, studio.sums, max_steps=1, method="ia3")
    with pytest.raises(SpecError, match=rf"version {ia3.id} was trained with ia3, which cannot be combined"):
        combine.submit_combine([a.id, ia3.id])
    with session_scope() as db:
        classifier = db.scalars(select(ModelVersion).where(ModelVersion.base_model_id == studio.bert)).first()
    if classifier is not None:
        with pytest.raises(SpecError, match="different base models"):
            combine.submit_combine([a.id, classifier.id])
    llama_classifier = train(studio, studio.cls, max_steps=1)  # the tiny Llama with a classification head
    with pytest.raises(SpecError, match=rf"different tasks \(#{a.id} causal_lm, #{llama_classifier.id} seq_cls\)"):
        combine.submit_combine([a.id, llama_classifier.id])
    on_top = train(studio, studio.doubles, parent=a.id, max_steps=1)
    with pytest.raises(SpecError, match="different starting points"):
        combine.submit_combine([b.id, on_top.id])
    with pytest.raises(SpecError, match="density 1.5"):
        combine.submit_combine([a.id, b.id], how="ties", density=1.5)
