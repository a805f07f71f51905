"""Sequence classification through the real training job: a classification data set registered, the job
submitted as the CLI does (its task implied by the data), claimed and run by ``worker.job_process.main`` here,
then the version reloaded and exported. Encoders (tiny BERT, the real MiniLM) and a decoder with a head."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from sqlalchemy import func, select
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from models_db import Job, Metric, ModelVersion, session_scope
from studio import operations
from studio.datasets import DatasetError
from studio.jobspec import SpecError, build_train_spec
from tests.backends import backend_env, in_process
from tests.cli import write_instruction_jsonl
from tests.inprocess import run_to_version
from worker import lineage, methods
from worker.data_cls import label_names
from worker.export import export_version
from worker.recipes.seq_cls import classification_metrics, load_classifier

# The whole training split in a few batches, many times over: the label word is all there is to learn.
TRAIN = {"max_steps": 60, "per_device_train_batch_size": 16, "eval_split": 0.25, "logging_steps": 5,
         "eval_steps": 30, "save_steps": 60, "warmup_ratio": 0.0, "lr_scheduler_type": "constant"}
FILLERS = ["quick fox", "lazy dog", "the capital", "a haiku", "hello world", "the question", "autumn leaves",
           "in Paris"]


def toy_rows(n: int = 128) -> list[dict]:
    """Separable by one word: 'positive' texts are 'good', 'negative' ones 'bad'. The rest is noise
    shared by both classes: two short phrases, with the word first, between or last; each row is unique."""
    rows = []
    for i in range(n):
        word, label = ("positive", "good") if i % 2 else ("negative", "bad")
        k = i // 2
        a, b = FILLERS[k % len(FILLERS)], FILLERS[(k // len(FILLERS) + k + 1) % len(FILLERS)]
        rows.append({"text": [f"{word} {a} {b}", f"{a} {word} {b}", f"{a} {b} {word}"][k % 3], "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@dataclass
class Studio:
    root: Path
    models: dict[str, int]  # name -> id
    classification: int  # dataset ids
    instruction: int


def import_base(src, name: str) -> int:
    from worker.importer import register

    return register(src, name)[0]


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_bert_dir, tiny_llama_dir):
    """A migrated embedded studio with a tiny BERT and a tiny Llama, a classification and an instruction set."""
    from models_db.migrate import upgrade

    root = tmp_path_factory.mktemp("studio")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models gain nothing from intra-op threads, which crawl on a busy machine
    with pytest.MonkeyPatch.context() as mp, backend_env("embedded", root / "home") as env, in_process(mp, env):
        upgrade()
        models = {"bert": import_base(tiny_bert_dir, "tiny-bert"), "llama": import_base(tiny_llama_dir, "tiny-llama")}
        cls, report, _ = operations.add_dataset(write_jsonl(root / "toy.jsonl", toy_rows()))
        assert cls.format == "classification" and report.stats["labels"] == {"bad": 64, "good": 64}
        write_instruction_jsonl(root / "pairs.jsonl")
        pairs, _, _ = operations.add_dataset(root / "pairs.jsonl")
        yield Studio(root, models, cls.id, pairs.id)
    torch.set_num_threads(threads)



def submit(studio: Studio, model: str, method: str, dataset: int | None = None, task: str | None = None,
           parent: int | None = None, **settings) -> Job:
    spec = build_train_spec(model_id=studio.models[model], dataset_id=dataset or studio.classification,
                            method=method, settings={**TRAIN, **settings}, parent_version_id=parent, task=task)
    job, _ = operations.submit_train(spec)
    return job


run = run_to_version  # claim the job and run it here, as a worker's job process would


def encode(model_dir, rows: list[dict]) -> dict:
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.pad_token = tok.pad_token or tok.eos_token
    return tok([r["text"] for r in rows], padding=True, return_tensors="pt", return_token_type_ids=False)


def logits(model, batch: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits.float()


def reload(version: ModelVersion, base_dir, **load_kwargs):
    """The version rebuilt from disk through its lineage, for inference."""
    with session_scope() as db:
        chain = lineage.chain(db, version.id)
        db.expunge_all()
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    base = load_classifier(str(base_dir), version.config["labels"], tokenizer, **load_kwargs)
    return lineage.load_chain(base, chain, last="inference")


def metric_names(version: ModelVersion) -> set[str]:
    with session_scope() as db:
        return set(db.scalars(select(Metric.name).where(Metric.job_id == version.job_id)))


# ------------------------------------------------------------------------------ learning

@pytest.mark.parametrize("method, lr", [("lora", 1e-2), ("full", 3e-3)])
def test_encoder_learns_the_separable_set(method, lr, studio, tiny_bert_dir, trained_models, tmp_path):
    # ten passes over 96 rows: the regime where LoRA dropout (off by default) pays, as its help says
    extra = {"lora_dropout": 0.05} if method == "lora" else {}
    job = submit(studio, "bert", method, learning_rate=lr, **extra)
    assert job.config["task"] == "seq_cls"  # implied by the classification data set
    version = run(job)
    m = version.metrics
    assert m["eval_accuracy"] >= 0.8 and m["eval_f1"] >= 0.75, m  # chance is 0.5
    assert m["label_distribution"] == {"train": {"bad": 48, "good": 48}, "eval": {"bad": 16, "good": 16}}  # stratified
    assert m["steps"] == 60 and m["train_loss"] < m["first_train_loss"]
    assert 0 < m["trainable_params"] <= m["total_params"]
    assert (m["trainable_ratio"] < 1) == (method == "lora")
    assert {"loss", "eval_loss"} <= metric_names(version)
    assert version.config["task"] == "seq_cls" and version.config["labels"] == ["bad", "good"]

    # saved and reloaded: the same predictions as the model trained in memory; the head kept its labels
    rows = toy_rows(12)
    batch = encode(tiny_bert_dir, rows)
    expected = logits(trained_models[-1], batch)
    torch.testing.assert_close(logits(reload(version, tiny_bert_dir), batch), expected, atol=1e-5, rtol=0)

    # exported merged: a standalone classifier that names its labels
    out = tmp_path / "merged"
    export_version(version.id, out, merged=True, say=lambda _: None)
    standalone = AutoModelForSequenceClassification.from_pretrained(out)
    assert standalone.config.id2label == {0: "bad", 1: "good"}
    torch.testing.assert_close(logits(standalone, batch), expected, atol=1e-4, rtol=0)
    assert "AutoModelForSequenceClassification" in (out / "README.md").read_text()


@pytest.mark.parametrize("name", methods.names())
def test_every_method_trains_saves_and_reloads_a_classifier(name, studio, tiny_bert_dir, trained_models):
    """The head is new, so every method must train and save it with its own weights."""
    version = run(submit(studio, "bert", name, max_steps=2))
    assert version.method == name and version.metrics["steps"] == 2
    model = trained_models[-1]
    head = {n for n, p in model.named_parameters() if p.requires_grad and "classifier" in n}
    assert head, f"{name} left the classification head frozen"
    batch = encode(tiny_bert_dir, toy_rows(8))
    load_kwargs = methods.get(name).load_kwargs(methods.parse_params(name, version.config["method_params"]))
    atol = 2e-3 if load_kwargs else 1e-5  # bitsandbytes' 4-bit CPU kernel computes in bf16 on AVX-512 machines
    torch.testing.assert_close(logits(reload(version, tiny_bert_dir, **load_kwargs), batch), logits(model, batch),
                               atol=atol, rtol=0)


def test_decoder_with_a_classification_head(studio, tiny_llama_dir, trained_models):
    version = run(submit(studio, "llama", "lora", learning_rate=1e-2, target_modules="attention_mlp"))
    assert version.metrics["eval_accuracy"] >= 0.8, version.metrics
    model = trained_models[-1]
    assert model.config.pad_token_id is not None  # the head reads the last token before the padding
    assert any("score" in n and p.requires_grad for n, p in model.named_parameters())  # the new head trained
    batch = encode(tiny_llama_dir, toy_rows(12))
    torch.testing.assert_close(logits(reload(version, tiny_llama_dir), batch), logits(model, batch),
                               atol=1e-5, rtol=0)


def test_continue_a_classifier_on_the_same_labels(studio, trained_models):
    parent = run(submit(studio, "bert", "lora", learning_rate=1e-2, max_steps=4))
    version = run(submit(studio, "bert", "lora", parent=parent.id, learning_rate=1e-2, max_steps=4))
    assert version.parent_id == parent.id and version.config["labels"] == parent.config["labels"]
    with pytest.raises(SpecError, match=rf"version {parent.id} was trained for seq_cls and cannot be continued as "
                                        "causal_lm"):
        submit(studio, "bert", "lora", dataset=studio.instruction, task="causal_lm", parent=parent.id)
    pets = [{"text": f"{a} {word}", "label": word} for a in FILLERS for word in ("cat", "dog")]
    other, _, _ = operations.add_dataset(write_jsonl(studio.root / "pets.jsonl", pets))
    with pytest.raises(SpecError, match=rf"version {parent.id} classifies bad, good but dataset {other.id} has the "
                                        "labels cat, dog"):
        submit(studio, "bert", "lora", dataset=other.id, parent=parent.id)


def test_a_stored_split_is_the_eval_set(studio):
    from studio.datasets.split import Split

    ds, _, _ = operations.add_dataset(write_jsonl(studio.root / "split.jsonl", toy_rows(40)), split=Split(ratio=0.2))
    version = run(submit(studio, "bert", "lora", dataset=ds.id, max_steps=2, eval_split=0.5))  # stored split wins
    rows, counts = version.metrics["rows"], version.metrics["label_distribution"]
    assert rows["eval_source"] == "the data set's stored split" and rows["eval_rows"] == ds.eval_rows == 8
    assert sum(counts["eval"].values()) == 8 and sum(counts["train"].values()) == ds.rows == 32


def test_metrics_accuracy_and_macro_f1():
    from transformers import EvalPrediction

    logits_ = torch.tensor([[2.0, 0], [2, 0], [0, 2], [0, 2], [2, 0], [0, 2]]).numpy()
    labels = torch.tensor([0, 0, 1, 1, 1, 2]).numpy()  # class 2 never predicted: its F1 is 0
    m = classification_metrics(EvalPrediction(predictions=logits_, label_ids=labels))
    assert m["accuracy"] == pytest.approx(4 / 6)
    # class 0: P 2/3 R 1 -> 0.8; class 1: P 2/3 R 2/3 -> 2/3; class 2: 0
    assert m["f1"] == pytest.approx((0.8 + 2 / 3 + 0) / 3)


def test_label_order_is_stable():
    assert label_names(["10", "2", "0"]) == ["0", "2", "10"]
    assert label_names(["spam", "ham", "eggs"]) == ["eggs", "ham", "spam"]


# ------------------------------------------------------------------------------ bad input, before the queue

def jobs_count() -> int:
    with session_scope() as db:
        return db.scalar(select(func.count(Job.id)))


def test_task_and_data_set_must_match_both_ways(studio, capsys):
    from studio.cli import main

    before = jobs_count()
    with pytest.raises(SpecError, match=rf"dataset {studio.instruction} is instruction data; sequence classification "
                                        r"\(task seq_cls\) takes a classification data set"):
        submit(studio, "bert", "lora", dataset=studio.instruction, task="seq_cls")
    with pytest.raises(SpecError, match=rf"dataset {studio.classification} is classification data; causal-LM "
                                        r"training .* Train a classifier on it with task seq_cls"):
        submit(studio, "llama", "lora", task="causal_lm")
    with pytest.raises(SystemExit) as exit_:  # the CLI says the same, on stderr
        main(["train", "--model", "tiny-bert", "--dataset", str(studio.instruction), "--task", "seq_cls"])
    assert exit_.value.code == 2 and "sequence classification (task seq_cls) takes" in capsys.readouterr().err
    assert jobs_count() == before
    assert submit(studio, "llama", "lora", dataset=studio.instruction).config["task"] == "causal_lm"  # implied


def test_one_class_only_is_refused_before_the_job_is_queued(studio):
    rows = [{"text": f"{i} the positive text", "label": "good"} for i in range(12)]
    ds, _, _ = operations.add_dataset(write_jsonl(studio.root / "one.jsonl", rows))
    before = jobs_count()
    with pytest.raises(SpecError, match=rf"dataset {ds.id} has one label \('good'\) in all its 12 rows: a classifier "
                                        "needs at least two classes"):
        submit(studio, "bert", "lora", dataset=ds.id)
    assert jobs_count() == before


def test_a_label_column_with_inconsistent_types_is_refused(studio):
    rows = [{"text": f"{i} the answer", "label": i % 2} for i in range(20)] + [{"text": "odd one", "label": "maybe"}]
    with pytest.raises(DatasetError, match=r"1 inconsistent label \(row 21\)"):  # nothing registered
        operations.add_dataset(write_jsonl(studio.root / "mixed.jsonl", rows))
    ds, _, reused = operations.add_dataset(studio.root / "mixed.jsonl", drop_bad_rows=True)
    assert not reused and ds.rows == 20 and ds.stats["labels"] == {"0": 10, "1": 10}


# ------------------------------------------------------------------------------ the real MiniLM

def test_minilm_imports_and_trains_a_step(studio, capsys):
    from studio.cli import main

    started = time.monotonic()
    main(["models", "import", "--demo-encoder", "--json"])
    model = json.loads(capsys.readouterr().out)["model"]
    assert model["name"] == "all-MiniLM-L6-v2" and 20e6 < model["params_total"] < 25e6
    studio.models["minilm"] = model["id"]
    version = run(submit(studio, "minilm", "lora", learning_rate=1e-3, max_steps=1, eval_steps=1, save_steps=1))
    assert version.metrics["steps"] == 1 and version.metrics["eval_accuracy"] is not None
    assert version.config["labels"] == ["bad", "good"]
    assert time.monotonic() - started < 60


def test_prefix_tuning_on_a_decoder_classifier_is_refused_before_the_queue_and_the_virtual_token_methods_train(studio):
    """peft's prefix-tuning classifier reads an encoder's pooled output, which a decoder's classifier does not
    return: refused by name before anything is queued, pointing at the methods that do train there."""
    with session_scope() as db:
        before = db.scalar(select(func.count(Job.id)))
    with pytest.raises(SpecError, match=r"prefix_tuning cannot train a classifier on .*a decoder \(llama\).*Use "
                                        r"prompt_tuning or p_tuning"):
        submit(studio, "llama", "prefix_tuning", max_steps=2)
    with session_scope() as db:
        assert db.scalar(select(func.count(Job.id))) == before  # nothing queued
    version = run(submit(studio, "llama", "prompt_tuning", max_steps=2))  # what the message offers does train
    assert version.metrics["steps"] == 2 and version.config["task"] == "seq_cls"
