"""The Fleet tab's "Audit log" box, for admins: logins and account, trust, share and delete actions
(studio/audit.py). Members do not see the box; the handler refuses them too, whatever the page shows."""
from __future__ import annotations

import gradio as gr

from models_db.access import current, sees_all
from studio import audit

SHOWN = 200


def refresh():
    """(the box, shown to admins only; its table, newest first)."""
    if not sees_all(current()):
        return gr.Accordion(visible=False), []
    return gr.Accordion(visible=True), audit.rows(audit.recent(limit=SHOWN))


def render(on_select: list) -> None:
    """The box (closed until opened); its refresh joins the tab's own (``on_select``)."""
    with gr.Accordion(f"Audit log (admins; the newest {SHOWN} events)", open=False, visible=False,
                      elem_id="fleet-audit") as box:
        button = gr.Button("Refresh", size="sm", elem_id="fleet-audit-refresh")
        table = gr.Dataframe(headers=audit.COLUMNS, interactive=False, wrap=True, elem_id="fleet-audit-table")
    button.click(refresh, None, [box, table])
    on_select.append((refresh, [], [box, table]))
