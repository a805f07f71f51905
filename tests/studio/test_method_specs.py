"""The method specs (studio/methods): torch-free, one per method, and the only place method knowledge lives:
the advisor, the recipes and the child read their flags and cost terms instead of testing names."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from studio import methods
from studio.advisor.architecture import model_shape

ROOT = Path(__file__).resolve().parents[2]
# Every module outside the two method folders (the advisor, jobcost, the recipes and the job's process are where
# method knowledge used to be copied). The decision tree (studio/advisor/tree.py) names the methods its
# articles recommend: those are rules about methods, not facts of one.
READ_FLAGS_ONLY = sorted(p for pkg in ("studio", "worker", "models_db") for p in (ROOT / pkg).rglob("*.py")
                         if p.relative_to(ROOT).parts[1:2] != ("methods",) and "migrations" not in p.parts)
# lines that name a method's word for something else: "adapter" is also an export format (studio/exports.py)
NOT_A_METHOD = {'return self.kind != "adapter"'}
TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 400, "tie_word_embeddings": False}


def test_importing_the_specs_pulls_in_no_torch_and_no_worker():
    code = ("import sys, studio.methods as m; m.describe_all(); m.parse_params('lora', {'r': '8'}); "
            "bad = [k for k in ('torch', 'transformers', 'peft', 'bitsandbytes', 'accelerate', 'worker') "
            "if k in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


@pytest.mark.parametrize("path", READ_FLAGS_ONLY, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_method_name_is_tested_outside_the_method_folders(path):
    if path.name == "tree.py":
        return
    names = "|".join(methods.names())
    quoted = rf"""["']({names})["']"""
    checks = re.compile(rf"(==|!=)\s*{quoted}|{quoted}\s*(==|!=)|\bin\s*[(\[{{][^)\]}}]*{quoted}")
    found = [line.strip() for line in path.read_text().splitlines()
             if checks.search(line) and line.strip() not in NOT_A_METHOD]
    assert not found, f"{path.name} tests method names; give the spec a flag or a cost term instead: {found}"


def test_every_spec_states_its_cost_and_its_advice():
    shape = model_shape(TINY)
    for spec in methods.REGISTRY.values():
        params = methods.parse_params(spec.name, spec.advised_params(methods.AdvisorChoices(layers=shape.layers)))
        assert spec.costs.trainable(shape, params) > 0, spec.name
        assert spec.costs.extra_activations(shape, params) >= 0 and spec.costs.frozen_added(shape, params) >= 0
        assert spec.trains_base == (spec.costs.base_trainable(shape, params) > 0), spec.name
        assert not (spec.trains_base and spec.quantizes_base), spec.name
        assert spec.quantizes_base == (spec.costs.quantization(shape, params) is not None), spec.name
        assert spec.packable == (spec.costs.virtual_tokens(shape, params) == 0), spec.name
        assert "learning_rate" in spec.default_training, spec.name
        if spec.count_as:
            assert spec.count_as in methods.REGISTRY and methods.get(spec.count_as).params in spec.params.__mro__


def test_the_estimator_reads_a_methods_quantization_from_its_params():
    from studio.advisor import estimate_memory

    four, eight = (estimate_memory(TINY, "qlora", params={"bits": bits}) for bits in (4, 8))
    assert (four.settings["quant"], eight.settings["quant"]) == ("nf4", "int8")
    with pytest.raises(ValueError, match="trains the base weights, which cannot be quantized"):
        estimate_memory(TINY, "full", quant="nf4")
    with pytest.raises(ValueError, match="are not lora's"):
        estimate_memory(TINY, "lora", params=methods.parse_params("ia3", {}))


def test_one_error_shape_for_every_value_the_converter_refuses():
    """`--set seed=2.5` and `--set r=2.5` fail with the same sentence (the method's name before it)."""
    import pytest

    from studio import methods
    from studio.jobspec import TRAINING, SpecError, coerce

    with pytest.raises(SpecError) as setting:
        coerce("seed", TRAINING["seed"], "2.5")
    with pytest.raises(methods.MethodError) as param:
        methods.parse_params("lora", {"r": "2.5"})
    assert str(setting.value) == "seed must be an int (got '2.5'). Set --set seed=<int>."
    assert str(param.value) == "lora: r must be an int (got '2.5'). Set --set r=<int>."


def test_the_checklist_names_every_flag_and_cost_term():
    """docs/adding-a-method.md is the checklist a new method follows: a flag or cost term added to the spec
    and left out of it would be missed by the next method."""
    import dataclasses

    text = (ROOT / "docs" / "adding-a-method.md").read_text()
    flags = [f.name for f in dataclasses.fields(methods.MethodSpec) if f.type in ("bool", "str | None", bool)]
    terms = [f.name for f in dataclasses.fields(methods.Costs)]
    assert "mergeable" in flags and "added" in terms
    assert [n for n in flags + terms if f"`{n}`" not in text] == []
