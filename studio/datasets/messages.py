"""Chat messages: OpenAI-style ``role``/``content`` and ShareGPT ``from``/``value`` lists.

A conversation is valid when every message has a known role and non-empty text content, an
optional system message comes first, user and assistant then alternate starting with the user,
and the assistant has the last word. Only the first problem of a conversation is reported.
"""
from __future__ import annotations

from .errors import Problem

ROLES = {"system": "system", "user": "user", "assistant": "assistant", "human": "user", "gpt": "assistant"}


def describe(value: object) -> str:
    """Name a JSON value's type for a message: 'a number', 'a list', ..."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "text" if isinstance(value, str) else type(value).__name__


def to_messages(items: list, column: str, row: int, where: str) -> tuple[list[dict] | None, Problem | None]:
    """Convert ``items`` to canonical messages, or return the first problem found."""
    messages, problem = parse_items(items, column, row, where)
    if problem:
        return None, problem
    problem = check_order([m["role"] for m in messages], column, row, where)
    return (None, problem) if problem else (messages, None)


def parse_items(items: list, column: str, row: int, where: str) -> tuple[list[dict] | None, Problem | None]:
    """Each item as a canonical message (known role, non-empty text), order unchecked; or the first problem."""
    messages = []
    for i, item in enumerate(items):
        message, problem = _one(item, f"{column}[{i}]", row, where)
        if problem:
            return None, problem
        messages.append(message)
    return messages, None


def as_messages(prompt: str | list[dict]) -> list[dict]:
    """A canonical prompt (one user turn as text, or the conversation so far) as a message list."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _one(item: object, field: str, row: int, where: str) -> tuple[dict | None, Problem | None]:
    if not isinstance(item, dict):
        return None, Problem("wrong_type", row, field, f"{where}: {field} is {describe(item)}, expected a message object")
    role_key, content_key = ("from", "value") if "from" in item and "role" not in item else ("role", "content")
    raw = item.get(role_key)
    if raw is None:
        return None, Problem("missing_field", row, f"{field}.{role_key}", f"{where}: {field} has no '{role_key}'")
    role = ROLES.get(raw.strip().lower()) if isinstance(raw, str) else None
    if role is None:
        return None, Problem(
            "unknown_role", row, f"{field}.{role_key}",
            f"{where}: {field} has role {raw!r}; accepted roles are system, user, assistant "
            "(ShareGPT: system, human, gpt). Remove those turns or drop the row.",
        )
    content = item.get(content_key)
    if content is None or (isinstance(content, str) and (not content or content.isspace())):
        state = "has no" if content is None else "has an empty"
        return None, Problem("missing_content", row, f"{field}.{content_key}",
                             f"{where}: {field} ({role}) {state} '{content_key}'")
    if not isinstance(content, str):
        return None, Problem("wrong_type", row, f"{field}.{content_key}",
                             f"{where}: {field}.{content_key} is {describe(content)}, expected text")
    return {"role": role, "content": content}, None


def check_order(roles: list[str], column: str, row: int, where: str) -> Problem | None:
    """Check system-first, user/assistant alternation and the final assistant turn."""
    start = 1 if roles and roles[0] == "system" else 0
    if len(roles) == start:
        return Problem("turn_order", row, column, f"{where}: {column} has no user/assistant turns")
    for i in range(start, len(roles)):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if roles[i] == expected:
            continue
        if roles[i] == "system":
            why = f"a system message at position {i}; only the first message may be a system prompt"
        else:
            why = f"{column}[{i}] is {roles[i]!r} where {expected!r} was expected; turns must alternate user/assistant"
        return Problem("turn_order", row, f"{column}[{i}]", f"{where}: {why}")
    if roles[-1] != "assistant":
        return Problem("turn_order", row, f"{column}[{len(roles) - 1}]",
                       f"{where}: the last message is {roles[-1]!r}; a conversation must end with an assistant reply")
    return None
