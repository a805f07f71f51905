"""The Gradio app: one line per tab. The UI launches work; workers do it."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from studio.tab_state import Shell
from studio.tabs import advisor, datasets, fleet, jobs, playground, sweeps, train, versions

STATIC = Path(__file__).resolve().parent.parent / "static"
TABS = [("datasets", "Datasets", datasets), ("advisor", "Advisor", advisor), ("train", "Train", train),
        ("jobs", "Jobs", jobs), ("sweeps", "Sweeps", sweeps), ("fleet", "Fleet", fleet), ("versions", "Versions", versions),
        ("playground", "Playground", playground)]


def remember_tab(saved: dict | None, evt: gr.SelectData) -> dict:
    """The tab this browser opened, kept in its localStorage so a reload reopens it."""
    by_label = {label: tab_id for tab_id, label, _ in TABS}
    return {**(saved or {}), "tab": by_label.get(evt.value, (saved or {}).get("tab"))}


def restore_tab(saved: dict | None):
    """On page load: the tab this browser had open (the first tab for a new browser)."""
    tab = (saved or {}).get("tab")
    return gr.Tabs(selected=tab) if tab in {t for t, _, _ in TABS} else gr.skip()


def build_app() -> gr.Blocks:
    with gr.Blocks(title="FineTune Studio") as app:
        gr.HTML((STATIC / "header.html").read_text())
        job_id = gr.State(None)  # outside gr.Tabs: any child of Tabs is taken for a tab
        # outside gr.Tabs too: a tab's components mount when it is first opened, after the page has loaded
        saved = gr.BrowserState({}, storage_key="finetune-studio")
        train_saved = gr.BrowserState({}, storage_key="finetune-studio-train")
        with gr.Tabs(elem_id="main-tabs") as tabs:
            shell = Shell(tabs=tabs, job_id=job_id, saved=saved, train_saved=train_saved)
            tab_objs = {}
            for tab_id, label, module in TABS:
                with gr.Tab(label, id=tab_id, elem_id=f"tab-{tab_id}") as tab_objs[tab_id]:
                    module.render(shell)
            shell.wire_pending()
        # each tab refreshes its lists when opened, and all of them once when the page loads
        for tab_id, (fn, inputs, outputs) in shell.on_select.items():
            tab_objs[tab_id].select(fn, inputs, outputs)
            app.load(fn, inputs, outputs)
        for fn, inputs, outputs in shell.on_load:
            app.load(fn, inputs, outputs, show_progress="hidden")
        tabs.select(remember_tab, saved, saved, show_progress="hidden")
        app.load(restore_tab, saved, tabs)
    return app


def theme() -> gr.Theme:
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="sky", neutral_hue="slate",
                          font=["Inter", "system-ui", "sans-serif"])
