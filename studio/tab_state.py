"""What the tabs share: the tab strip (to switch tabs) and the job being watched."""
from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr


@dataclass
class Shell:
    tabs: gr.Tabs
    job_id: gr.State  # the job this browser tab watches (per user, never global)
    # what this browser keeps across reloads (localStorage): the open tab
    saved: gr.BrowserState | None = None
    # the Train form as this browser last had it: a key of its own, written by one event only, so that a
    # write of the tab cannot undo one of the form (studio/tabs/train.py remember_form)
    train_saved: gr.BrowserState | None = None
    # tab id -> (handler, inputs, outputs): refreshed when the tab is opened and when the page loads
    on_select: dict = field(default_factory=dict)
    # (handler, inputs, outputs) run once when the page loads: what this browser kept (the Train form)
    on_load: list = field(default_factory=list)
    # tab id -> (fill(payload) -> values, outputs): a tab whose form another tab can fill (the Train form)
    receivers: dict = field(default_factory=dict)
    # wiring that needs every tab rendered first (a button on one tab whose outputs are on a later tab)
    pending: list = field(default_factory=list)

    def hand_to(self, tab_id: str, trigger, make_payload, inputs: list) -> None:
        """When ``trigger`` fires (e.g. ``button.click``), ``make_payload(*inputs)`` fills tab ``tab_id``'s
        form and opens that tab, in one update: the fields, their choices and the tab switch arrive together,
        so the tab's own refresh on opening reads the filled values and cannot put back older ones."""
        def wire() -> None:
            fill, outputs = self.receivers[tab_id]

            @friendly
            def handler(*args):
                return [*fill(make_payload(*args)), gr.Tabs(selected=tab_id)]
            self.note_tab(trigger(handler, inputs, [*outputs, self.tabs]), tab_id)
        self.pending.append(wire)

    def note_tab(self, dependency, tab_id: str) -> None:
        """After an event that opens ``tab_id`` itself (not a click on the tab strip), this browser remembers
        that tab for its next reload, as it does for clicks (studio/app.py remember_tab)."""
        if self.saved is not None:
            dependency.success(lambda saved: {**(saved or {}), "tab": tab_id}, self.saved, self.saved,
                               show_progress="hidden")

    def wire_pending(self) -> None:
        """Run the wiring that waited for every tab (build_app calls this once, after the last tab)."""
        for wire in self.pending:
            wire()
        self.pending.clear()


def friendly(fn):
    """Wrap a handler so any error reaches the person as a message, never as a stack trace."""
    import functools
    import logging

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ValueError as e:  # SpecError, DatasetError, MethodError: written for people
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:
            logging.getLogger("studio.ui").exception("handler %s failed", fn.__name__)
            raise gr.Error(f"Something went wrong ({e.__class__.__name__}: {e}). The server log has details.",
                           print_exception=False) from None
    return wrapper
