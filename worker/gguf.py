"""GGUF exports through llama.cpp's own tools, and the Ollama Modelfile beside them.

No hand-written tensor mapper: the merged model is saved as a transformers folder and handed to llama.cpp's
``convert_hf_to_gguf.py`` (with its own ``gguf-py``), which writes the weights, the tokenizer and the chat template
into the GGUF; ``f16`` and ``q8_0`` come straight from the converter, ``q4_k_m`` from llama.cpp's
``llama-quantize`` on the float16 file. llama.cpp comes from a well-kept package: the source distribution of
``llama-cpp-python`` vendors it whole. ``python -m worker llama-cpp`` downloads that sdist with pip and unpacks
its ``vendor/llama.cpp`` (seconds); ``--build`` also compiles ``llama-quantize`` (minutes on two cores: once, never
in a test). ``STUDIO_LLAMA_CPP_DIR`` points elsewhere.

The Modelfile's ``TEMPLATE`` and ``PARAMETER stop`` follow the model's chat format (ChatML, Llama 3, Gemma,
Mistral/Llama 2 ``[INST]``; no template: the prompt as it is); a template of another family is refused, with the
reason, before anything is converted.
"""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from studio import exports
from studio.settings import get_settings
from worker.errors import UserFacingError

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"  # the sdist whose vendor/llama.cpp is the converter and quantizer
FETCH = "python -m worker llama-cpp"


def llama_cpp_dir() -> Path:
    """llama.cpp's source tree: STUDIO_LLAMA_CPP_DIR, or the one ``python -m worker llama-cpp`` unpacked."""
    configured = get_settings().llama_cpp_dir
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "finetune-studio" / "llama.cpp"


def converter() -> Path:
    script = llama_cpp_dir() / "convert_hf_to_gguf.py"
    if not script.exists():
        raise UserFacingError(f"the GGUF export needs llama.cpp's converter, which this worker does not have at "
                              f"{script.parent}: run `{FETCH}` once on the worker (it unpacks llama.cpp from "
                              f"{LLAMA_CPP_PYTHON}'s source distribution), or set STUDIO_LLAMA_CPP_DIR.")
    return script


def quantizer() -> Path:
    binary = llama_cpp_dir() / "build" / "bin" / "llama-quantize"
    if not binary.exists():
        raise UserFacingError(f"the Q4_K_M GGUF export needs llama.cpp's llama-quantize, not built on this worker: "
                              f"run `{FETCH} --build` once (minutes), or export gguf-q8_0 or gguf-f16 instead.")
    return binary


def known_architectures() -> set[str] | None:
    """The architectures llama.cpp's converter converts, read from its source without importing it (torch, seconds):
    ``TEXT_MODEL_MAP`` in ``conversion/__init__.py`` (the converter split into modules), plus the names of every
    ``@ModelBase.register(...)`` (the older single-file converter). None where the tree says neither."""
    root = llama_cpp_dir()
    names: set[str] = set()
    package = root / "conversion" / "__init__.py"
    if package.exists():
        for node in ast.parse(package.read_text()).body:
            target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(
                node, ast.Assign) else None)
            if isinstance(target, ast.Name) and target.id == "TEXT_MODEL_MAP" and node.value is not None:
                names |= set(ast.literal_eval(node.value))
    for source in [root / "convert_hf_to_gguf.py", *sorted((root / "conversion").glob("*.py"))]:
        if source.exists():
            for args in re.findall(r"@ModelBase\.register\(([^)]*)\)", source.read_text()):
                names |= set(re.findall(r"[\"']([^\"']+)[\"']", args))
    return names or None


def preflight(fmt: exports.ExportFormat, architectures: list[str], tokenizer, what: str = "this version") -> None:
    """Everything a GGUF export can be refused for before the base is loaded or a file written: llama.cpp's
    converter (and, for q4_k_m, its quantizer) on this worker, an architecture the converter knows, and a chat
    template the Modelfile can express. UserFacingError with the reason and what to export instead (``what``: the
    export's subject in the message, a version or a base model)."""
    converter()
    if fmt.gguf_type == "q4_k_m":
        quantizer()
    known = known_architectures()
    unknown = [a for a in architectures if known is not None and a not in known]
    if unknown:
        raise UserFacingError(f"llama.cpp's converter (from {LLAMA_CPP_PYTHON}) does not convert {', '.join(unknown)}, "
                              f"so {what} has no GGUF export; export merged safetensors or ONNX instead.")
    family_of(getattr(tokenizer, "chat_template", None))


def fetch(build: bool = False, say=print) -> Path:
    """Unpack llama.cpp from llama-cpp-python's sdist (downloaded with pip) into :func:`llama_cpp_dir`; with
    ``build``, compile llama-quantize and llama-simple there (cmake, CPU, static)."""
    target = llama_cpp_dir()
    if not (target / "convert_hf_to_gguf.py").exists():
        with tempfile.TemporaryDirectory() as tmp:
            say(f"downloading {LLAMA_CPP_PYTHON}'s source distribution with pip")
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                            LLAMA_CPP_PYTHON, "-d", tmp], check=True)
            (sdist,) = Path(tmp).glob("llama_cpp_python-*.tar.gz")
            with tarfile.open(sdist) as tar:
                members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name]
                tar.extractall(tmp, members=members, filter="data")
            (source,) = Path(tmp).glob("llama_cpp_python-*/vendor/llama.cpp")
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():  # a link to a tree that is gone
                target.unlink()
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(str(source), target)
        say(f"llama.cpp unpacked at {target}")
    programs = ("llama-quantize", "llama-simple")  # the Q4_K_M quantizer; greedy replay for the fidelity check
    if build and not all((target / "build" / "bin" / p).exists() for p in programs):
        say(f"building {' and '.join(programs)} (minutes on a small CPU)")
        subprocess.run(["cmake", "-B", "build", "-DGGML_NATIVE=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                        "-DLLAMA_BUILD_EXAMPLES=ON", "-DLLAMA_BUILD_SERVER=OFF", "-DBUILD_SHARED_LIBS=OFF",
                        "-DCMAKE_BUILD_TYPE=Release"], cwd=target, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", "build", "--target", *programs, "-j"], cwd=target, check=True,
                       stdout=subprocess.DEVNULL)
    return target


# --- the Modelfile --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChatFamily:
    """A chat format Ollama's Go templates can express: how to tell it from a jinja template, its TEMPLATE, and the
    strings that end a turn."""

    name: str
    marker: str
    template: str
    stops: tuple[str, ...]


FAMILIES = (
    ChatFamily("chatml", "<|im_start|>",
               "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}<|im_start|>user\n"
               "{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n",
               ("<|im_start|>", "<|im_end|>")),
    ChatFamily("llama3", "<|start_header_id|>",
               "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
               "{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}"
               "<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>",
               ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
    ChatFamily("gemma", "<start_of_turn>",
               "<start_of_turn>user\n{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}<end_of_turn>\n"
               "<start_of_turn>model\n{{ .Response }}<end_of_turn>\n", ("<start_of_turn>", "<end_of_turn>")),
    ChatFamily("inst", "[INST]", "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }} [/INST]{{ .Response }}",
               ("[INST]", "[/INST]")),
)


def family_of(chat_template: str | None) -> ChatFamily | None:
    """The Modelfile family of a jinja chat template; None for no template (the prompt goes as it is)."""
    if not chat_template:
        return None
    for family in FAMILIES:
        if family.marker in chat_template:
            return family
    raise UserFacingError("the model's chat template is of a family the studio cannot translate into an Ollama "
                          f"Modelfile (known: {', '.join(f.name for f in FAMILIES)}); export gguf without Ollama is "
                          "not offered for it: export merged safetensors instead.")


def default_system(tokenizer) -> str | None:
    """The system prompt the template adds when a conversation has none (SmolLM2's "You are a helpful AI
    assistant named SmolLM…"), so Ollama behaves like the model: its SYSTEM line."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    text = tokenizer.apply_chat_template([{"role": "user", "content": "\x00"}], tokenize=False)
    head = text.split("\x00")[0]
    for start, end in (("<|im_start|>system\n", "<|im_end|>"), ("<|start_header_id|>system<|end_header_id|>\n\n",
                                                                "<|eot_id|>")):
        if start in head:
            return head.split(start, 1)[1].split(end, 1)[0] or None
    return None


def modelfile(gguf_name: str, tokenizer) -> str:
    """The Ollama Modelfile beside the GGUF: FROM it, the chat format's TEMPLATE and stops, the default system
    prompt, greedy-friendly defaults left to Ollama."""
    family = family_of(getattr(tokenizer, "chat_template", None))
    lines = [f"FROM ./{gguf_name}"]
    if family is None:
        lines.append('TEMPLATE """{{ .Prompt }}"""')
    else:
        lines.append(f'TEMPLATE """{family.template}"""')
        system = default_system(tokenizer)
        if system:
            lines.append(f'SYSTEM """{system}"""')
        lines += [f'PARAMETER stop "{stop}"' for stop in family.stops]
    eos = getattr(tokenizer, "eos_token", None)
    if eos and (family is None or eos not in family.stops):
        lines.append(f'PARAMETER stop "{eos}"')
    return "\n".join(lines) + "\n"


def render_ollama(template: str, system: str | None, prompt: str) -> str:
    """What Ollama sends the model for one turn (the subset of its Go templates the families use), for checks."""
    out = template
    for name, value in (("System", system), ("Prompt", prompt)):
        block = "{{ if ." + name + " }}"
        while block in out:
            start = out.index(block)
            end = out.index("{{ end }}", start)
            inner = out[start + len(block):end]
            out = out[:start] + (inner if value else "") + out[end + len("{{ end }}"):]
        out = out.replace("{{ ." + name + " }}", value or "")
    return out.split("{{ .Response }}")[0]


# --- the writer -------------------------------------------------------------------------------------------------

def save_gguf(model, tokenizer, out: Path, fmt: exports.ExportFormat, say) -> dict:
    """The merged model saved as a transformers folder, converted by llama.cpp (and quantized for q4_k_m) into
    ``model-<type>.gguf``, plus the Modelfile; written in a temporary folder and moved in only when whole."""
    script = converter()
    binary = quantizer() if fmt.gguf_type == "q4_k_m" else None
    name = f"model-{fmt.gguf_type}.gguf"
    modelfile_text = modelfile(name, tokenizer)  # a template it cannot translate is refused before converting
    arch = ", ".join(model.config.architectures or [type(model).__name__])
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".gguf-") as tmp:
        hf = Path(tmp) / "hf"
        say("saving the merged float32 weights for llama.cpp's converter")
        model.save_pretrained(hf, safe_serialization=True)
        tokenizer.save_pretrained(hf)
        del model  # the caller passed its only reference: free it before the converter reads the files
        outtype = "f16" if binary else fmt.gguf_type
        first = Path(tmp) / (f"model-{outtype}.gguf" if binary else name)
        say(f"converting to GGUF {outtype} with llama.cpp's convert_hf_to_gguf.py")
        _run([sys.executable, str(script), str(hf), "--outfile", str(first), "--outtype", outtype], arch, "converter")
        if binary:
            say(f"quantizing to {fmt.gguf_type.upper()} with llama.cpp's llama-quantize")
            _run([str(binary), str(first), str(Path(tmp) / name), fmt.gguf_type.upper()], arch, "quantizer")
        shutil.move(str(Path(tmp) / name), out / name)
    (out / "Modelfile").write_text(modelfile_text)
    return {"gguf_file": name, "gguf_type": fmt.gguf_type}


def _run(cmd: list[str], arch: str, what: str) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if p.returncode:
        last = next((line for line in reversed(p.stderr.strip().splitlines()) if line.strip()), "")
        raise UserFacingError(f"llama.cpp's {what} failed on this {arch} model ({last[-300:]}); export merged "
                              "safetensors instead.")
