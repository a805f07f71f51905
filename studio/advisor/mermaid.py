"""Draw the whole decision tree as a Mermaid flowchart, with the path taken highlighted.

Gradio's ``gr.Markdown`` renders fenced ``mermaid`` blocks.  Questions are diamonds, memory checks
are hexagons, recommendations are stadiums; nodes on the path get the ``taken`` class, the
recommendation the ``chosen`` class, and the edges followed a thicker ``linkStyle``.
"""
from __future__ import annotations

from studio.advisor.tree import TREE, Leaf, Tree

TAKEN_STYLE = "fill:#fde68a,stroke:#b45309,stroke-width:2px,color:#111827"
CHOSEN_STYLE = "fill:#86efac,stroke:#15803d,stroke-width:3px,color:#111827"
IDLE_STYLE = "fill:#f3f4f6,stroke:#9ca3af,color:#374151"
TAKEN_LINK = "stroke:#b45309,stroke-width:3px"


def _text(label: str) -> str:
    """Escape a label for a quoted Mermaid node (entity codes survive Markdown sanitising)."""
    return label.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def _shape(item, source: str) -> str:
    label = _text(f"{item.label} ({source})" if source != "studio" else item.label)
    if isinstance(item, Leaf):
        return f'{item.id}(["{label}"])'
    if item.checks:
        return f'{item.id}{{{{"{label}"}}}}'
    return f'{item.id}{{"{label}"}}'


def _taken(path) -> list[tuple[str, str | None, str | None]]:
    """(node, answer, next) triples from an Advice, a list of Steps, or a list of step dicts."""
    if path is None:
        return []
    steps = getattr(path, "path", path)
    out = []
    for s in steps:
        get = s.get if isinstance(s, dict) else (lambda k, s=s: getattr(s, k, None))
        out.append((get("node"), get("answer"), get("next")))
    return out


def _objective_label(path, taken) -> str | None:
    """"objective: dpo · preference data" for the node above the tree, from an Advice's objective (or the first
    objective step of a bare path); None when the path has no objective step."""
    first = next(((n, a) for n, a, _ in taken if n == "objective"), None)
    if first is None:
        return None
    objective = getattr(path, "objective", None) or {}
    name = objective.get("name") if isinstance(objective, dict) else None
    start = objective.get("from_version") if isinstance(objective, dict) else None
    return (f"objective: {name or first[1]}" + (f" from version #{start}" if start else "") +
            (f" · {first[1]}" if name and first[1] != name else ""))


def render_mermaid(path=None, tree: Tree = TREE) -> str:
    """A fenced Mermaid flowchart of the whole tree with ``path`` (Advice, steps or step dicts) highlighted."""
    ids = {item.id for item in tree.items}
    every = _taken(path)
    taken = [t for t in every if t[0] in ids]  # the objective's steps are drawn as one node above the root
    taken_nodes = {n for n, _, _ in taken if n}
    taken_edges = {(n, a) for n, a, nxt in taken if nxt}
    chosen = {n for n, _, nxt in taken if n and nxt is None}
    lines = ["```mermaid", "flowchart TD"]
    lines += [f"  {_shape(item, item.source)}" for item in tree.items]
    highlighted = []
    index = 0
    for node in tree.nodes:
        for branch in node.branches:
            lines.append(f"  {node.id} -->|{branch.answer}| {branch.to}")
            if (node.id, branch.answer) in taken_edges:
                highlighted.append(str(index))
            index += 1
    aim = _objective_label(path, every)
    if aim:  # what the weights learn from, decided by the data before the method's questions
        lines += [f'  aim(["{_text(aim)}"])', f"  aim --> {tree.root}"]
        highlighted.append(str(index))
        taken_nodes.add("aim")
    lines += [f"  classDef taken {TAKEN_STYLE}", f"  classDef chosen {CHOSEN_STYLE}", f"  classDef idle {IDLE_STYLE}"]
    idle = [i.id for i in tree.items if i.id not in taken_nodes]
    if idle:
        lines.append(f"  class {','.join(idle)} idle")
    if taken_nodes - chosen:
        lines.append(f"  class {','.join([*(['aim'] if aim else []), *(i.id for i in tree.items if i.id in taken_nodes - chosen)])} taken")
    if chosen:
        lines.append(f"  class {','.join(sorted(chosen))} chosen")
    if highlighted:
        lines.append(f"  linkStyle {','.join(highlighted)} {TAKEN_LINK}")
    lines.append("```")
    return "\n".join(lines)
