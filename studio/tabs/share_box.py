"""The "Shared with my team" checkbox of the Datasets and Versions tabs (studio/sharing.py does the sharing)."""
from __future__ import annotations

import gradio as gr

from studio.sharing import is_shared, set_shared
from studio.tab_state import friendly


def shared_box(kind: str, row_id: int | None) -> gr.Checkbox:
    """The checkbox's state for the row picked (off and inactive with none)."""
    return gr.Checkbox(value=is_shared(kind, row_id), interactive=bool(row_id))


def toggle(kind: str):
    """A handler for the checkbox's ``input`` event: (row_id, shared) -> the box as it now is."""
    @friendly
    def handler(row_id: int | None, shared: bool):
        if not row_id:
            raise gr.Error(f"Select a {kind} first.")
        out = set_shared(kind, int(row_id), shared)
        gr.Info(f"{kind.capitalize()} #{out['id']} is {'now shared with your team' if out['shared'] else 'private'}.")
        return gr.Checkbox(value=out["shared"])
    handler.__name__ = f"share_{kind}"
    return handler
