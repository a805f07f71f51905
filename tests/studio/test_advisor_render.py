"""The tree picture, the suggested settings' keys, and the no-torch rule for the UI process."""
import re
import subprocess
import sys

import pytest

from studio.advisor import TREE, AdvisorInputs, advise, render_mermaid
from studio.methods import REGISTRY as METHODS  # the method specs, by name

TRAINING_KEYS = {"learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "warmup_ratio", "lr_scheduler_type", "weight_decay",
                 "max_grad_norm", "gradient_checkpointing", "bf16", "fp16", "optim", "max_seq_length", "eval_split"}


def test_mermaid_draws_whole_tree_and_highlights_path():
    advice = advise(AdvisorInputs(params_b=7.0, gpu_memory_gb=[8], deploy="edge"))
    text = render_mermaid(advice)
    assert text.startswith("```mermaid\nflowchart TD\n") and text.endswith("\n```")
    for item in TREE.items:
        assert re.search(rf"^  {item.id}[\[\(\{{]", text, re.M), item.id
    edges = re.findall(r"^  (\w+) -->\|(\w+)\| (\w+)$", text, re.M)
    assert len(edges) == sum(len(n.branches) for n in TREE.nodes)
    taken = [i for i, (a, ans, b) in enumerate(edges)
             if any(s.node == a and s.answer == ans for s in advice.path)]
    aim = len(edges)  # the objective's node above the root, drawn after the tree's edges
    assert re.search(rf"linkStyle {','.join(map(str, [*taken, aim]))} ", text)
    assert '  aim(["objective: sft"])' in text and "  aim --> gpu" in text  # no data set: the task kind decides
    assert "class leaf_qlora chosen" in text
    taken_line = next(line for line in text.splitlines() if line.endswith(" taken"))
    assert "fits_lora" in taken_line and "leaf_full" not in taken_line


def test_mermaid_accepts_json_steps_and_no_path():
    advice = advise(AdvisorInputs(params_b=1.0, gpu_memory_gb=[24]))
    assert render_mermaid(advice.to_json()["path"]) == render_mermaid(advice.path)
    plain = render_mermaid()
    assert "linkStyle" not in plain and not re.search(r" (taken|chosen)$", plain, re.M)


def test_mermaid_labels_are_escaped():
    text = render_mermaid()
    for label in re.findall(r'"([^"]*)"', text):
        assert "<" not in label and ">" not in label


@pytest.mark.parametrize("scenario", [
    dict(params_b=1.0, complexity=0.9, quality="high", examples=10_000, gpu_memory_gb=[40]),
    dict(params_b=7.0, gpu_memory_gb=[8], deploy="edge"),
    dict(params_b=1.0, task="classification", complexity=0.3, gpu_memory_gb=[24]),
    dict(params_b=1.5, task="multi_task", gpu_memory_gb=[16]),
    dict(params_b=0.135, cpu_only=True, ram_gb=16),
    dict(params_b=1.0, task="style", gpu_memory_gb=[24], examples=300),
])
def test_hyperparameters_are_cli_set_keys(scenario):
    advice = advise(AdvisorInputs(**scenario))
    h = advice.hyperparameters
    training = {k: v for k, v in h.items() if k in TRAINING_KEYS}
    method_params = {k: v for k, v in h.items() if k not in TRAINING_KEYS}
    assert {"learning_rate", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
            "max_seq_length", "eval_split"} <= set(training)
    from worker import methods

    methods.parse_params(advice.method, method_params)  # raises on any unknown key or bad value


def test_method_names_match_the_registry():
    from worker import methods

    assert set(METHODS) == set(methods.names())


def test_advisor_imports_no_torch():
    code = ("import sys; from studio.advisor import advise, AdvisorInputs, render_mermaid; "
            "a = advise(AdvisorInputs(params_b=1.0, gpu_memory_gb=[24])); render_mermaid(a); "
            "bad = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
