"""Exports of a model version: a merged standalone model (float32/16, bfloat16, 8- or 4-bit bitsandbytes,
ONNX) or the trained part alone, with a model card; the Versions tab's downloads and `studio versions export`.

Every merged format starts the same way: the base reloaded in float32 and the lineage merged onto it
(merging into quantized weights would re-quantize and lose the update); the format's writer then saves it.
After writing, the export verifies itself (worker/fidelity.py: fixed prompts from the version's data replayed
in the export's own runtime against the trained model; a ``fidelity`` record in studio_version.json and the
job's result), and a few greedy tokens are timed (``export_ms_per_token_<format>`` in the version's metrics).

ONNX goes through ``torch.onnx.export`` (its dynamo exporter) and is checked with onnxruntime. optimum's
exporter would be the usual road, but optimum-onnx (0.1.0, the newest) pins transformers<4.58 and fails to
import with transformers 5 (``get_parameter_dtype`` is gone); torch's own exporter follows torch.
"""
from __future__ import annotations

import gc
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from models_db import BaseModel, ModelVersion, session_scope
from studio import exports, store
from studio.settings import get_settings
from worker import fidelity, gguf, lineage, methods
from worker.context import JobContext
from worker.errors import UserFacingError
from worker.model_card import card_parents, model_card
from worker.trust import model_code_kwargs, tokenizer_code_kwargs

LATENCY_TOKENS = 8  # greedy tokens timed after an export: cheap, and enough to average out the first one
ONNX_TOLERANCE = 1e-3  # max |logit difference| between the ONNX model and PyTorch on a check batch
NEEDS_ONNX = ("the onnx export needs the onnx extra: pip install 'finetune-studio[onnx]' "
              "(onnx, onnxscript, onnxruntime) on the worker, or export merged safetensors instead")


def merged_model(version: ModelVersion, base: BaseModel, versions: list[ModelVersion], tokenizer, say):
    """The base reloaded in float32 with the whole lineage merged in: a plain transformers model."""
    import torch
    from transformers import AutoModelForCausalLM

    say(f"loading {base.name} in float32 to merge onto full-precision weights")
    if version.config.get("task") == "seq_cls":  # a classifier: the base gets a head for the version's labels
        from worker.recipes.seq_cls import load_classifier

        model = load_classifier(base.path, version.config["labels"], tokenizer, dtype=torch.float32,
                                **model_code_kwargs(base))
    else:
        model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32, **model_code_kwargs(base))
    say("merging the lineage into the base")
    return lineage.load_chain(model, versions, last="merge")


def _inference_model(version: ModelVersion, base: BaseModel, versions: list[ModelVersion], tokenizer):
    """The version as the studio runs it (float32 base, lineage loaded for inference): the adapter's reference."""
    import torch
    from transformers import AutoModelForCausalLM

    if version.config.get("task") == "seq_cls":
        from worker.recipes.seq_cls import load_classifier

        model = load_classifier(base.path, version.config["labels"], tokenizer, dtype=torch.float32,
                                **model_code_kwargs(base))
    else:
        model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32, **model_code_kwargs(base))
    return lineage.load_chain(model, versions, last="inference")


def save_safetensors(model, tokenizer, out: Path, fmt: exports.ExportFormat, say) -> dict:
    """config, generation config, tokenizer and the weights at the format's dtype."""
    import torch

    if fmt.dtype != "float32":
        model = model.to(getattr(torch, fmt.dtype))
    say(f"saving merged weights ({fmt.dtype})")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {}


def bnb_device(bits: int) -> str:
    """Where bitsandbytes can quantize: the CPU (its CPU backend, so the memory check is the RAM's), else a
    CUDA GPU; a clear refusal when neither can."""
    import torch

    from worker.methods.qlora import probe_backend

    try:
        probe_backend(bits, "cpu")
        return "cpu"
    except methods.MethodError as cpu_error:
        if torch.cuda.is_available():
            return "cuda:0"
        raise UserFacingError(
            f"the bnb-{bits}bit export cannot quantize on this worker: {cpu_error} It needs a CUDA GPU (or "
            "bitsandbytes' CPU backend): run it on a GPU worker, or export merged safetensors instead.") from None


def save_bnb(model, tokenizer, out: Path, fmt: exports.ExportFormat, say) -> dict:
    """Merged weights saved in float32, reloaded through transformers' BitsAndBytesConfig, saved quantized."""
    import transformers
    from transformers import BitsAndBytesConfig

    from worker.methods.qlora import SKIP_MODULES, narrow_linears

    device = bnb_device(fmt.bits)
    cls = getattr(transformers, model.__class__.__name__)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        say("saving the merged float32 weights to quantize them")
        model.save_pretrained(tmp, safe_serialization=True)
        del model  # the caller passed its only reference: free the float32 copy before quantizing
        gc.collect()
        if fmt.bits == 8:
            config = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=SKIP_MODULES)
        else:
            import torch

            narrow = narrow_linears(tmp)  # layers the 4-bit blocks cannot hold stay in full precision
            if narrow:
                say(f"{len(narrow)} linear layers stay unquantized: their width is not a multiple of the "
                    f"4-bit block ({', '.join(narrow[:3])}{' ...' if len(narrow) > 3 else ''})")
            config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                        bnb_4bit_compute_dtype=torch.float32,
                                        llm_int8_skip_modules=SKIP_MODULES + narrow)
        say(f"quantizing to {fmt.bits}-bit with bitsandbytes on {device}")
        quantized = cls.from_pretrained(tmp, quantization_config=config, device_map={"": device}, use_safetensors=True)
        quantized.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return {"bnb_device": device}


def logits_only(model):
    """The model as a module that takes (input_ids, attention_mask) and returns logits only: the graph
    ONNX gets (no KV cache, no output dict)."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    return LogitsOnly(model)


def check_batch(vocab_size: int, pad_id: int | None):
    """A fixed batch of two rows, the first padded on the left, to compare ONNX with PyTorch."""
    import torch

    ids = torch.randint(0, vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    if pad_id is not None:
        ids[0, :3] = pad_id
    return ids, mask


def save_onnx(model, tokenizer, out: Path, fmt: exports.ExportFormat, say) -> dict:
    """model.onnx (+ model.onnx.data) through torch.onnx's dynamo exporter, checked against PyTorch with
    onnxruntime on a padded batch; config and tokenizer beside it. An architecture the exporter cannot
    trace is refused with what to export instead."""
    import numpy as np
    import torch

    try:
        import onnxruntime as ort
        import onnxscript  # noqa: F401 - torch.onnx's dynamo exporter needs it
    except ImportError:
        raise UserFacingError(NEEDS_ONNX) from None
    model.eval()
    ids, mask = check_batch(model.config.vocab_size, tokenizer.pad_token_id)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits.float().numpy()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    arch = ", ".join(model.config.architectures or [type(model).__name__])
    say("exporting to ONNX (torch.onnx, dynamo)")
    try:
        torch.onnx.export(logits_only(model), (ids, mask), str(out / "model.onnx"), dynamo=True,
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
                          verbose=False)
    except Exception as e:  # noqa: BLE001 - any exporter failure is this architecture's limit
        raise UserFacingError(
            f"ONNX export is not supported for {arch} here ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
            "export merged safetensors (format merged or merged-fp16) instead.") from None
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    real = mask.numpy().astype(bool)  # padded positions' logits are meaningless in both
    diff = float(np.abs(got - expected)[real].max()) if expected.ndim == 3 else float(np.abs(got - expected).max())
    if diff > ONNX_TOLERANCE:
        raise UserFacingError(f"the ONNX export of {arch} disagrees with PyTorch (max logit difference {diff:.2g} > "
                              f"{ONNX_TOLERANCE}); export merged safetensors instead.")
    model.config.architectures = [type(model).__name__]  # save_pretrained sets it; config.save_pretrained does not
    model.config.save_pretrained(out)
    if getattr(model, "generation_config", None) is not None and model.can_generate():
        model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"onnx_max_abs_diff": diff}


WRITERS: dict[str, Callable] = {"safetensors": save_safetensors, "bnb": save_bnb, "onnx": save_onnx,
                                 "gguf": gguf.save_gguf}


# --- latency --------------------------------------------------------------------------------------------

def _greedy_ms_per_token(step, ids) -> float:
    """Mean milliseconds per greedy token, one warm-up token first; ``step(ids)`` returns next-token logits."""
    import numpy as np

    ids = np.asarray(ids)
    ids = np.concatenate([ids, step(ids).argmax(-1)[:, None]], axis=1)  # warm-up
    start = time.perf_counter()
    for _ in range(LATENCY_TOKENS):
        ids = np.concatenate([ids, step(ids).argmax(-1)[:, None]], axis=1)
    return (time.perf_counter() - start) * 1000 / LATENCY_TOKENS


def measure_latency(out: Path, fmt: exports.ExportFormat, device: str = "cpu", base: BaseModel | None = None) -> float | None:
    """Reload the export and time a few greedy tokens (ms/token, batch 1, this worker's CPU or GPU); the
    export is its base's architecture, so it loads with the base's trust flag (``base``; None: off).

    The PyTorch formats generate with their KV cache; the ONNX graph has none, so each token re-reads the
    prompt (the figure is an upper bound). Classifiers generate nothing: None."""
    import numpy as np
    from transformers import AutoTokenizer

    if fmt.kind == "gguf":
        return None  # llama.cpp's speed is not transformers' on dequantized weights: not measured here
    config = json.loads((out / "config.json").read_text())
    if not any(a.endswith("ForCausalLM") for a in config.get("architectures") or []):
        return None  # a classifier (or an encoder): nothing to generate
    trust = base if base is not None else BaseModel(trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(out, **tokenizer_code_kwargs(trust))
    prompt = tokenizer("The quick brown fox", return_tensors="np")["input_ids"].astype(np.int64)
    if fmt.kind == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        return _greedy_ms_per_token(
            lambda ids: session.run(["logits"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][:, -1], prompt)
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"device_map": {"": device}} if fmt.kind == "bnb" else {}
    model = AutoModelForCausalLM.from_pretrained(out, **kwargs, **model_code_kwargs(trust)).eval()
    ids = torch.from_numpy(prompt).to(model.device)
    with torch.no_grad():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False)  # warm-up
        start = time.perf_counter()
        new = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=LATENCY_TOKENS,
                             min_new_tokens=LATENCY_TOKENS, do_sample=False)
    n = new.shape[1] - ids.shape[1]
    return (time.perf_counter() - start) * 1000 / max(n, 1)


def record_metric(version_id: int, key: str, value: float) -> None:
    with session_scope() as db:
        v = db.get(ModelVersion, version_id)
        v.metrics = {**(v.metrics or {}), key: round(value, 4)}  # a new dict: JSON columns track assignment


# --- the export -----------------------------------------------------------------------------------------

def base_architectures(base: BaseModel) -> list[str]:
    """The architectures the base's config.json names (what the merged export's config names too)."""
    config = Path(base.path, "config.json")
    return list(json.loads(config.read_text()).get("architectures") or []) if config.exists() else []


def resolve_format(format: str | None, merged: bool | None) -> exports.ExportFormat:
    """``format`` wins; the older boolean ``merged`` means format merged (float32) or adapter."""
    return exports.get_format(format or ("merged" if merged else "adapter"))


def prepare(what: int | str, fmt: exports.ExportFormat, base: BaseModel, trained_dirs: list[Path], out_dir: Path,
            tokenizer_source: Path | str, say):
    """The checks every export makes before it loads a model or makes its folder (a version's, or a base model's
    as it is: ``what``, studio.exports.subject): memory, disk, and for GGUF llama.cpp's tools, the architecture and
    the chat template; then the size of the files is said. Returns the tokenizer the export ships."""
    from transformers import AutoTokenizer

    try:
        est = exports.check_memory(what, fmt, Path(base.path), trained_dirs)
        exports.check_disk(what, fmt, Path(base.path), Path(out_dir))
    except exports.ExportError as e:
        raise UserFacingError(str(e)) from None
    if est is not None:
        say(f"memory: {est.describe()}")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, **tokenizer_code_kwargs(base))
    if fmt.kind == "gguf":  # no converter, an architecture it does not know, a template Ollama cannot express
        gguf.preflight(fmt, base_architectures(base), tokenizer, what if isinstance(what, str) else "this version")
    if fmt.merged and Path(base.path, "config.json").exists():
        say(f"the {fmt.name} files will take about {exports.size_text(exports.files_bytes(fmt, Path(base.path)))}")
    return tokenizer


def build_into(out_dir: Path, write: Callable[[], tuple[dict, float | None]]) -> tuple[dict, float | None]:
    """Run ``write`` into ``out_dir`` (made here when missing); a failure removes a folder it made, so nothing
    half-written is left behind."""
    out_dir = Path(out_dir)
    made = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return write()
    except BaseException:
        if made:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def write_merged(load: Callable[[], object], tokenizer, fmt: exports.ExportFormat, out_dir: Path, prompts: list,
                 task: str, base: BaseModel, say, progress) -> tuple[dict, float | None]:
    """A standalone export: the model ``load`` returns (float32: the trained model, or a base as it is) replays the
    prompts as the reference, the format's writer saves it, the files are checked against the reference in their own
    runtime, and a few greedy tokens are timed. The writer's extras with the ``fidelity`` record, and the ms/token."""
    held = [load()]
    say(f"replaying {len(prompts)} prompts through the model before export, to check the export against")
    ref = fidelity.reference(held[0], tokenizer, prompts, task)
    # the model goes into the writer, which then holds its only reference (and may free it)
    extra = WRITERS[fmt.kind](held.pop(), tokenizer, out_dir, fmt, say)
    gc.collect()
    progress(2)
    say("verifying the export: the same prompts in its own runtime")
    extra["fidelity"] = fidelity.check_folder(out_dir, fmt, ref, prompts, base, extra.get("bnb_device", "cpu"))
    say("timing a few greedy tokens on the export")
    return extra, measure_latency(out_dir, fmt, extra.get("bnb_device", "cpu"), base)


def _write_and_verify(version: ModelVersion, base: BaseModel, versions: list[ModelVersion], tokenizer,
                      fmt: exports.ExportFormat, out_dir: Path, say, progress) -> tuple[dict, float | None]:
    """Write the format's files into ``out_dir`` and check them against the trained model: the writer's extras
    with the ``fidelity`` record, and the ms/token (None where not measured)."""
    prompts = fidelity.prompts_for(version)  # replayed through the export once it is written (worker/fidelity.py)
    task = (version.config or {}).get("task") or "causal_lm"
    if fmt.merged:
        extra, latency = write_merged(lambda: merged_model(version, base, versions, tokenizer, say), tokenizer, fmt,
                                      out_dir, prompts, task, base, say, progress)
        if latency is not None:
            record_metric(version.id, f"export_ms_per_token_{fmt.name}", latency)
        return extra, latency
    shutil.copytree(lineage.artifact(version), out_dir / "adapter", dirs_exist_ok=True)
    progress(2)
    say(f"verifying the adapter: {len(prompts)} prompts through the trained model and through the exported folder")
    ref = fidelity.reference(_inference_model(version, base, versions, tokenizer), tokenizer, prompts, task)
    gc.collect()
    return {"fidelity": fidelity.check_adapter(out_dir, versions, base, ref, prompts)}, None


def export_version(version_id: int, out_dir: Path, *, merged: bool | None = None, format: str | None = None,
                   say=print, progress: Callable[[int], None] = lambda step: None) -> Path:
    """Write the export to ``out_dir``: a merged model in ``format`` (with config, tokenizer, generation
    config), or the adapter folder and a loading snippet; a model card; and, for a merged causal LM,
    the reloaded export's ms/token recorded in the version's metrics. Refused up front (UserFacingError)
    when the method cannot merge or the merge needs more memory than this machine has; a failure while writing
    removes the folder it made (nothing half-written). ``progress(n)``: steps 1 (checked), 2 (written), 3 (measured, card written)."""
    with session_scope() as db:
        versions = lineage.chain(db, version_id)
        version = versions[-1]
        base = db.get(BaseModel, version.base_model_id)
        parents = card_parents(db, version_id)  # all of a combined version's, with their weights
        db.expunge_all()
    base.path = store.local_model(base.path)  # a worker on another machine merges onto its own copy (detached row)
    try:
        fmt = resolve_format(format, merged)
        exports.check_allowed(version, fmt)
    except exports.ExportError as e:
        raise UserFacingError(str(e)) from None
    tokenizer = prepare(version_id, fmt, base, [lineage.artifact(v) for v in versions], Path(out_dir),
                        lineage.artifact(version), say)
    progress(1)
    out_dir = Path(out_dir)
    extra, latency = build_into(out_dir, lambda: _write_and_verify(version, base, versions, tokenizer, fmt, out_dir,
                                                                   say, progress))
    say(fidelity.summary(extra["fidelity"]))
    progress(3)
    (out_dir / "README.md").write_text(model_card(version, base, fmt, versions, latency, parents)
                                       + fidelity.card_section(extra["fidelity"]))
    (out_dir / "studio_version.json").write_text(json.dumps(
        {"version_id": version.id, "name": version.name, "method": version.method, "base_model": base.name,
         "format": fmt.name, "parents": [v.id for v in versions[:-1]], "combined_from": parents if
         "combination" in (version.config or {}) else [], "config": version.config,
         "metrics": version.metrics, "export_ms_per_token": latency, **extra},
        indent=2, default=str))
    return out_dir


def run_export_job(ctx: JobContext) -> dict:
    """The worker side of the download buttons (the Versions tab's, ``studio models export``): build the export of
    a version, or of a base model as it is (``base_model_id`` in the job's config instead of ``version_id``), zip
    it."""
    cfg = ctx.job.config
    fmt = resolve_format(cfg.get("format"), cfg.get("merged"))
    if cfg.get("version_id") is None and cfg.get("base_model_id") is not None:
        from worker.export_base import export_base

        subject, build = {"base_model_id": int(cfg["base_model_id"])}, partial(export_base, int(cfg["base_model_id"]))
        name = f"base-{subject['base_model_id']}-{fmt.name}"
    else:
        subject, build = {"version_id": cfg["version_id"]}, partial(export_version, cfg["version_id"])
        name = f"version-{subject['version_id']}-{fmt.name}"
    exports_dir = get_settings().path("exports")
    stage = ctx.dir / name
    ctx.writer.put(max_steps=5, step=0)  # checked, written, measured, zipped, done
    out = build(stage, format=fmt.name, say=ctx.say, progress=lambda step: ctx.writer.put(step=step))
    meta = json.loads((out / "studio_version.json").read_text())
    ctx.say("zipping")
    ctx.writer.put(step=4)
    zip_path = shutil.make_archive(str(exports_dir / name), "zip", stage)
    shutil.rmtree(stage, ignore_errors=True)
    rel = str(Path(zip_path).relative_to(get_settings().home_abs))
    store.put(rel)  # the studio serving the download may be on another machine (studio/store.py)
    ctx.writer.put(step=5)
    return {"zip": rel, **subject, "format": fmt.name, "merged": fmt.merged,
            "ms_per_token": meta.get("export_ms_per_token"), "fidelity": meta.get("fidelity")}
