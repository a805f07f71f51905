"""A model's chat template rendered with jinja2 alone, as ``transformers``' ``apply_chat_template``
renders it (same sandbox, options, filters and globals), so the UI process can show and count the
exact text the worker trains on without importing transformers.

:func:`assistant_spans` finds the trained part of a conversation; the worker uses it too, with
transformers' own renderer, so both sides agree on what is trained.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from .errors import DatasetError

Render = Callable[[list[dict], bool], str]  # (messages, add_generation_prompt) -> text
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def read_chat_template(model_dir: Path) -> str | None:
    """The chat template saved with a tokenizer: ``chat_template.jinja`` (transformers 5), else the
    ``chat_template`` of ``tokenizer_config.json`` (a string, or named templates: ``default`` first)."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    template = read_tokenizer_config(model_dir).get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) and template.strip() else None


def read_tokenizer_config(model_dir: Path) -> dict:
    """``tokenizer_config.json`` of a model folder, or {} when absent."""
    path = model_dir / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}); re-import the model.") from exc


def special_tokens(config: dict) -> dict[str, str]:
    """The special tokens a template may read (``bos_token`` ...), as strings."""
    out = {}
    for key in SPECIAL_TOKENS:
        value = config.get(key)
        if isinstance(value, dict):  # a serialised AddedToken
            value = value.get("content")
        if isinstance(value, str):
            out[key] = value
    return out


class ChatTemplate:
    """A compiled chat template; ``render(messages, add_generation_prompt)`` gives the model's text."""

    def __init__(self, source: str, tokens: dict[str, str] | None = None):
        self.source, self.tokens = source, dict(tokens or {})
        try:
            self._template = _environment().from_string(source)
        except Exception as exc:
            raise DatasetError(f"the model's chat template does not compile ({exc}); fix or re-import the model.") from exc

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """The conversation as the model reads it."""
        return self._template.render(messages=messages, tools=None, documents=None,
                                     add_generation_prompt=add_generation_prompt, **self.tokens)


def assistant_spans(messages: list[dict], render: Render) -> tuple[str, list[tuple[int, int]]]:
    """Render a conversation and find the character spans of each assistant turn (its content and
    end-of-turn marker), the only parts trained on. Each span runs from the end of the conversation
    rendered up to the turn with a generation prompt to the end of it rendered with the turn."""
    text = render(messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render(messages[:i], True)
        upto = render(messages[: i + 1], False)
        if not text.startswith(upto) or not upto.startswith(before):
            raise DatasetError("this chat template renders a prefix of the conversation differently from the "
                               "whole; the studio cannot find the response tokens")
        spans.append((len(before), len(upto)))
    return text, spans


def _environment():
    """The sandbox transformers renders chat templates in (templates come with models: untrusted)."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """``{% generation %}...{% endgeneration %}`` marks trained text for transformers; here it just renders."""

        tags = frozenset({"generation"})

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        """Namespaces that refuse underscore attributes (a sandbox-escape route), as in transformers."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot set {name!r} on a namespace")

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, namespace=Namespace, dict=lambda *a, **k: dict(*a, **k),
                       strftime_now=lambda fmt: datetime.now().strftime(fmt))
    return env
