"""What the tabs share: the tab strip (to switch tabs) and the job being watched."""
from __future__ import annotations

from dataclasses import dataclass, field

import gradio as gr


@dataclass
class Shell:
    tabs: gr.Tabs
    job_id: gr.State  # the job this browser tab watches (per user, never global)
    # tab id -> (handler, inputs, outputs): refreshed when the tab is opened and when the page loads
    on_select: dict = field(default_factory=dict)
    # name -> gr.State one tab writes and another listens to ("train_settings": the Advisor fills the Train form)
    handoff: dict = field(default_factory=dict)


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
        except Exception as e:  # noqa: BLE001
            logging.getLogger("studio.ui").exception("handler %s failed", fn.__name__)
            raise gr.Error(f"Something went wrong ({e.__class__.__name__}: {e}). The server log has details.",
                           print_exception=False) from None
    return wrapper
