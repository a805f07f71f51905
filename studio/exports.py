"""Export formats of a model version, and the memory a merge needs: torch-free.

The studio checks an export here before it queues it (is the format allowed for the version's method,
does the merge fit in memory), with numbers a person can act on; the worker checks again on its own
machine before it loads anything (worker/export.py). All the loading, merging and quantizing of an
export runs on the worker's CPU, so the limit is available RAM (psutil), or ``STUDIO_EXPORT_MEMORY_GB``
where set (a smaller budget on a shared machine, and the tests' lever). At submit, the RAM is that of
the workers that can take the export (the fleet registry: the most any alive job-taking worker has, so
an export no worker can hold is refused before it queues); the studio's own figure stands in when no
worker on another machine has reported its RAM (embedded mode: the worker runs beside the studio).
"""
from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from models_db import BaseModel, ModelVersion
from studio.jobspec import SpecError
from studio.settings import get_settings
from studio import methods

GB = 2**30
# torch, transformers and the Python process itself, beside the weights
RUNTIME_BYTES = int(0.5 * GB)
DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
               "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


class ExportError(SpecError):
    """An export that cannot be built as asked; the message says what to do instead."""


@dataclass(frozen=True)
class ExportFormat:
    """One way to export a version. ``kind`` picks the worker's writer (worker/export.py WRITERS).

    ``working_copies``: how many extra copies of the float32 base the step holds at its peak, beside
    the base itself (safetensors serialises each tensor to bytes; converting to half precision holds both
    dtypes of a tensor for a while; ONNX holds the graph and its proto). Measured in docs/exports.md."""

    name: str
    label: str
    kind: str  # adapter | safetensors | bnb | onnx | gguf
    help: str
    dtype: str = "float32"  # the saved weights (safetensors kinds)
    bits: int | None = None  # bitsandbytes quantization
    working_copies: float = 1.0
    # the export verifies itself (worker/fidelity.py): the least greedy-token agreement with the trained model
    # and the largest mean KL over the first reply tokens it may show and still be "verified" (docs/exports.md)
    fidelity: tuple[float, float] = (1.0, 1e-4)
    gguf_type: str | None = None  # llama.cpp's type: the converter's --outtype, or llama-quantize's (q4_k_m)
    bytes_per_weight: float = 4.0  # the written files' size per weight (the disk check, the size estimate)

    @property
    def merged(self) -> bool:
        return self.kind != "adapter"


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("merged", "merged model, float32 safetensors", "safetensors",
                 "Base and lineage merged into one standalone model, full precision."),
    ExportFormat("merged-fp16", "merged model, float16 safetensors", "safetensors",
                 "Merged, saved in half precision: half the size; for GPUs.", dtype="float16", fidelity=(0.9, 0.01)),
    ExportFormat("merged-bf16", "merged model, bfloat16 safetensors", "safetensors",
                 "Merged, saved in bfloat16: half the size, float32's range.", dtype="bfloat16", fidelity=(0.8, 0.05)),
    ExportFormat("bnb-8bit", "merged model, 8-bit bitsandbytes (LLM.int8)", "bnb",
                 "Merged in full precision, then quantized to 8 bits: about a quarter of float32.", bits=8, fidelity=(0.8, 0.1)),
    ExportFormat("bnb-4bit", "merged model, 4-bit bitsandbytes (NF4)", "bnb",
                 "Merged in full precision, then quantized to 4-bit NF4: about an eighth of float32.", bits=4, fidelity=(0.6, 0.5)),
    ExportFormat("onnx", "merged model, ONNX (onnxruntime)", "onnx",
                 "Merged, exported to ONNX for onnxruntime (needs the onnx extra).", working_copies=2.0),
    ExportFormat("gguf-f16", "merged model, GGUF float16 (llama.cpp, Ollama)", "gguf",
                 "Merged, converted by llama.cpp's own converter to GGUF in float16, with the tokenizer, the chat "
                 "template and an Ollama Modelfile.", dtype="float16", gguf_type="f16", fidelity=(0.9, 0.01),
                 bytes_per_weight=2.0),
    ExportFormat("gguf-q8_0", "merged model, GGUF Q8_0 (llama.cpp, Ollama)", "gguf",
                 "Merged, converted to GGUF with 8-bit blocks (Q8_0): about a quarter of float32; with a Modelfile.",
                 gguf_type="q8_0", fidelity=(0.8, 0.1), bytes_per_weight=1.07),
    ExportFormat("gguf-q4_k_m", "merged model, GGUF Q4_K_M (llama.cpp, Ollama)", "gguf",
                 "Merged, converted to GGUF float16 and quantized by llama.cpp's llama-quantize to Q4_K_M (needs "
                 "it built once: python -m worker llama-cpp --build); with a Modelfile.",
                 gguf_type="q4_k_m", fidelity=(0.6, 0.5), bytes_per_weight=0.62),
    ExportFormat("adapter", "the trained part only (adapter)", "adapter",
                 "The adapter (or the trained weights) with the base it needs and a loading snippet.",
                 working_copies=0.0),
)}


def llama_cpp_phrase(record: dict | None) -> str | None:
    """A GGUF export's replay in llama.cpp (worker/llama_replay.py) in words, for the CLI's and the Versions tab's
    fidelity lines; None where it did not run."""
    replayed = (record or {}).get("llama_cpp") or {}
    if not replayed.get("ran") or "first_token_agreement" not in replayed:
        return None
    return (f"{replayed['first_token_agreement']:.0%} of replies start as the trained model's, "
            f"{replayed['identical_replies']} of {replayed['prompts']} identical")


def get_format(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise ExportError(f"unknown export format {name!r}: use one of {', '.join(FORMATS)}")
    return FORMATS[name]


def allowed_formats(method: str) -> list[str]:
    """A mergeable method exports in every format; the others only as the adapter (plus a loading snippet)."""
    return list(FORMATS) if methods.get(method).mergeable else ["adapter"]


def check_allowed(version: ModelVersion, fmt: ExportFormat) -> None:
    if fmt.merged and not methods.get(version.method).mergeable:
        raise ExportError(
            f"{version.method} cannot be merged into the base model (its weights are not a change to the base's), "
            f"so it has no {fmt.name} export; export the adapter instead (--format adapter): you get the adapter, "
            "the base it needs and a loading snippet.")
    if fmt.kind == "gguf" and ((version.config or {}).get("task") or "causal_lm") != "causal_lm":
        raise ExportError(f"version {version.id} is a classifier; GGUF ({fmt.name}) is for llama.cpp and Ollama, "
                          "which generate text: export merged safetensors or ONNX instead.")


# --- base models ----------------------------------------------------------------------------------------------

def base_formats() -> list[str]:
    """What a base model exports as, as it is: every format that converts its weights (GGUF for llama.cpp and
    Ollama, half precision, bitsandbytes, ONNX). Not ``adapter`` (nothing was trained) nor ``merged`` (float32:
    nothing is merged into a base, so it would be the base's own weights unchanged)."""
    return [name for name, f in FORMATS.items() if f.merged and not (f.kind == "safetensors" and f.dtype == "float32")]


def check_base_allowed(base: BaseModel, fmt: ExportFormat) -> None:
    """Refuse (ExportError) a base model's export that would convert nothing, or of a model that generates no
    text (an encoder has no head until a classifier version gives it one)."""
    from studio.evaluations import is_causal_lm

    others = ", ".join(base_formats())
    if not fmt.merged:
        raise ExportError(f"base model {base.name} has no trained part, so it has no {fmt.name} export; export it "
                          f"in a format that converts it: {others}.")
    if fmt.name not in base_formats():
        raise ExportError(f"base model {base.name} as {fmt.name} would be its own weights unchanged (nothing is merged "
                          f"into a base model); export it in a format that converts it: {others}.")
    if not is_causal_lm(base):
        raise ExportError(f"base model {base.name} ({base.architecture}) does not generate text, and a base model is "
                          "exported as it is only when it does; train a classifier version on it and export that.")


def check_base_export(db, base_model_id: int, format: str) -> ExportFormat:
    """Everything the studio can check before queuing a base model's export: it exists (and this person may use
    it: models_db.access), the format converts it, and it fits in the memory of the workers that can take it."""
    base = db.get(BaseModel, base_model_id)
    if base is None:
        raise ExportError(f"base model {base_model_id} does not exist (studio models list)")
    fmt = get_format(format)
    check_base_allowed(base, fmt)
    check_memory(f"base model {base.name}", fmt, Path(base.path), [], fleet_memory(db))
    return fmt


def disk_needed(fmt: ExportFormat, base_dir: Path) -> int:
    """Bytes a merged export writes: its files (weights at the format's size, plus 1%), and for GGUF the merged
    float32 folder the converter reads (and, for a llama-quantize type, the float16 GGUF in between)."""
    params = safetensors_params(base_dir)
    need = int(params * fmt.bytes_per_weight * 1.01)
    if fmt.kind == "gguf":
        need += params * 4 + (params * 2 if fmt.gguf_type not in ("f16", "q8_0", "bf16", "f32") else 0)
    return need


def files_bytes(fmt: ExportFormat, base_dir: Path) -> int:
    """The size of a merged export's files (its weights at the format's bytes per weight): the size estimate shown
    before it starts."""
    return int(safetensors_params(base_dir) * fmt.bytes_per_weight)


def size_text(n: int) -> str:
    """Bytes for a person: GB from a tenth of one, MB below (a tiny model's files are not '0.00 GB')."""
    return f"{n / GB:.2f} GB" if n >= GB / 10 else f"{n / 2**20:.1f} MB"


def subject(what: int | str) -> str:
    """What an export is of, in a message: a version id ("version 7"), or a base model's words as given."""
    return f"version {what}" if isinstance(what, int) else what


def check_disk(version_id: int | str, fmt: ExportFormat, base_dir: Path, where: Path) -> None:
    """Refuse (ExportError) a merged export whose files would not fit on the disk it is written to;
    ``version_id``: the version, or a base model's words (:func:`subject`)."""
    import shutil

    if not fmt.merged or not Path(base_dir, "config.json").exists():
        return
    probe = Path(where)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free, need = shutil.disk_usage(probe).free, disk_needed(fmt, Path(base_dir))
    if need > free:
        raise ExportError(f"Exporting {subject(version_id)} as {fmt.name} writes ~{need / GB:.2f} GB, and {probe} has "
                          f"{free / GB:.2f} GB free; free disk space or export somewhere else.")


# --- memory ---------------------------------------------------------------------------------------------

def safetensors_params(folder: Path) -> int:
    """The number of weights in a folder's safetensors files, from their headers (no tensor is read)."""
    total = 0
    for file in sorted(Path(folder).glob("*.safetensors")):
        with open(file, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > min(file.stat().st_size, 100 * 2**20):  # a broken or forged header: never read as asked
                raise ExportError(f"{file.name} is not a readable safetensors file (its header claims {length} bytes)")
            header = json.loads(f.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                n = 1
                for d in info["shape"]:
                    n *= d
                total += n
    return total


@dataclass(frozen=True)
class MemoryEstimate:
    """The peak memory an export needs (bytes, by part) and what the machine has."""

    fmt: ExportFormat
    parts: dict[str, int]
    available: int
    source: str  # where ``available`` came from
    machine: str = "this machine"  # whose memory ``available`` is

    @property
    def needed(self) -> int:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.needed <= self.available

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / GB:.2f} GB" for k, v in self.parts.items() if v)
        return (f"needs ~{self.needed / GB:.2f} GB ({parts}), {self.machine} has {self.available / GB:.2f} GB "
                f"available ({self.source})")


Memory = tuple[int, str, str]  # (bytes available, where the figure came from, whose memory it is)


def available_memory() -> Memory:
    """Bytes an export may use on this machine: STUDIO_EXPORT_MEMORY_GB if set, else the RAM available now."""
    limit = get_settings().export_memory_gb
    if limit is not None:
        return int(limit * GB), "STUDIO_EXPORT_MEMORY_GB", "this machine"
    import psutil

    return int(psutil.virtual_memory().available), "free RAM", "this machine"


def fleet_memory(db) -> Memory:
    """Bytes an export may use on the workers that can take it: the most available RAM among the alive
    workers that take jobs (registered with their RAM, worker/consumer.py); a worker on this machine counts
    with this machine's figure now. This machine's figure alone when no worker elsewhere reported its RAM
    (embedded mode, or none registered yet). STUDIO_EXPORT_MEMORY_GB, where set, wins as everywhere."""
    from studio.fleet import alive_job_workers

    here = available_memory()
    if get_settings().export_memory_gb is not None:
        return here
    host, workers = socket.gethostname(), alive_job_workers(db)
    remote = [(int(w.ram_available), "free RAM at its last heartbeat",
               f"the largest worker that takes exports, {w.id} on {w.host},")
              for w in workers if w.host != host and w.ram_available]
    if not remote:
        return here
    beside = [(here[0], here[1], "this machine (a worker runs here too)")] if any(w.host == host for w in workers) else []
    return max(remote + beside, key=lambda m: m[0])


def estimate(fmt: ExportFormat, base_dir: Path, artifact_dirs: list[Path], memory: Memory | None = None) -> MemoryEstimate:
    """Peak memory of a merged export: the base loaded in float32, every version's weights of the lineage
    (adapters, or whole models for full fine-tuning), the format's working copies, and the runtime;
    against ``memory`` (default: this machine's, :func:`available_memory`)."""
    base = safetensors_params(base_dir) * 4
    trained = sum(safetensors_params(d) * 4 for d in artifact_dirs)
    parts = {"base in float32": base, "trained weights": trained,
             "working copy": int(base * fmt.working_copies), "runtime": RUNTIME_BYTES}
    return MemoryEstimate(fmt, parts, *(memory or available_memory()))


def refusal(version_id: int | str, est: MemoryEstimate) -> str:
    instead = "export the adapter instead or free memory" if isinstance(version_id, int) else "free memory"
    return (f"Exporting {subject(version_id)} as {est.fmt.name} {est.describe()}; {instead} (a worker with more "
            "RAM, or STUDIO_EXPORT_MEMORY_GB if the limit is set too low).")


def check_memory(version_id: int | str, fmt: ExportFormat, base_dir: Path, artifact_dirs: list[Path],
                 memory: Memory | None = None) -> MemoryEstimate | None:
    """Refuse (ExportError) a merged export that needs more memory than ``memory`` (default: this machine's
    RAM, the worker's own re-check); None for the adapter, which loads nothing, and where the files are
    not on this machine (the worker checks again)."""
    if not fmt.merged or not Path(base_dir, "config.json").exists():
        return None
    est = estimate(fmt, base_dir, artifact_dirs, memory)
    if not est.fits:
        raise ExportError(refusal(version_id, est))
    return est


def lineage_dirs(version: ModelVersion) -> list[Path]:
    """The artifact folders of a version and its ancestors (oldest first)."""
    chain = []
    v = version
    while v is not None:
        chain.append(v)
        v = v.parent
    home = get_settings().home_abs
    return [home / x.artifacts["adapter"] for x in reversed(chain) if "adapter" in (x.artifacts or {})]


def check_export(db, version_id: int, format: str) -> ExportFormat:
    """Everything the studio can check before queuing an export: the version exists, the format exists
    and fits its method, and the merge fits in the memory of the workers that can take it."""
    version = db.get(ModelVersion, version_id)
    if version is None:
        raise ExportError(f"version {version_id} does not exist (studio versions list)")
    fmt = get_format(format)
    check_allowed(version, fmt)
    base = db.get(BaseModel, version.base_model_id)
    check_memory(version_id, fmt, Path(base.path), lineage_dirs(version), fleet_memory(db))
    return fmt


def format_choices(method: str) -> list[tuple[str, str]]:
    """(label, name) of the formats the method allows, for the UI's picker."""
    return [(f"{name}: {FORMATS[name].label}", name) for name in allowed_formats(method)]


def preview(db, version_id: int, format: str) -> str:
    """Before the click, one line on the picked format: what it is and what memory its merge needs here,
    or why it will be refused (Markdown)."""
    try:
        fmt = check_export(db, version_id, format)
    except ExportError as e:
        return f"**Cannot export:** {e}"
    if not fmt.merged:
        return f"{fmt.help} Nothing is merged, so it needs no extra memory."
    version = db.get(ModelVersion, version_id)
    base = db.get(BaseModel, version.base_model_id)
    if not Path(base.path, "config.json").exists():
        return f"{fmt.help} (The worker checks the memory it needs before it starts.)"
    est = estimate(fmt, Path(base.path), lineage_dirs(version), fleet_memory(db))
    return f"{fmt.help} About {size_text(files_bytes(fmt, Path(base.path)))} of files. The merge {est.describe()}."
