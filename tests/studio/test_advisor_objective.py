"""The advisor's first question: the data decides the objective (demonstrations -> SFT, preference pairs -> DPO
from the SFT version, or ORPO without one, ratings -> KTO, verifiable answers -> GRPO, a benchmark trains
nothing), each with its reason on the path; the method then has to be one the objective can train with."""
import pytest

from studio.advisor import AdvisorInputs, advise
from studio.advisor.explain import advice_text
from studio.advisor.objective import choose


@pytest.mark.parametrize("fmt,sft,reward,name,start", [
    ("instruction", 4, None, "sft", None), ("chat", None, None, "sft", None), ("text", None, None, "sft", None),
    ("classification", None, None, "classification", None),
    ("preference", 4, None, "dpo", 4),  # the SFT version is the start and the reference
    ("preference", None, None, "orpo", None),  # no SFT version yet: answers and preference in one run
    ("feedback", None, None, "kto", None), ("qa", None, None, "grpo", None), ("qa", 4, 9, "grpo", 4),
    ("multiple_choice", None, None, None, None),  # a benchmark: it measures, it does not train
])
def test_the_data_decides_the_objective_with_a_reason(fmt, sft, reward, name, start):
    aim = choose(fmt, sft_version=sft, reward_model=reward)
    assert (aim.name, aim.from_version) == (name, start)
    assert aim.steps and all(s.rule and s.detail for s in aim.steps)
    if fmt == "qa":
        from studio.objectives import rewards

        assert aim.params["reward"].startswith("numeric_match") and (str(reward) in aim.params["reward"]) == bool(reward)
        assert len(rewards.parse(aim.params["reward"])) == (2 if reward else 1)  # the GRPO setting accepts it


def test_without_a_data_set_the_task_kind_decides():
    assert choose(None, task="classification").name == "classification"
    assert choose(None, task="instruction").name == "sft"


def test_dpo_advice_starts_from_the_sft_version_with_a_smaller_step_and_says_so():
    sft = advise(AdvisorInputs(params_b=1.0, gpu_memory_gb=[24], data_format="instruction"))
    dpo = advise(AdvisorInputs(params_b=1.0, gpu_memory_gb=[24], data_format="preference", sft_version=7))
    assert dpo.objective == {"name": "dpo", "params": {}, "from_version": 7, "note": ""}
    assert [s.node for s in dpo.path[:2]] == ["objective", "objective_start"]
    assert dpo.method == sft.method  # the method's own questions are unchanged
    assert dpo.hyperparameters["learning_rate"] == pytest.approx(sft.hyperparameters["learning_rate"] * 0.1)
    text = advice_text(dpo)
    assert "objective dpo from version #7" in text and "--objective dpo --from-version 7" in text
    assert dpo.to_json()["objective"]["name"] == "dpo"


def test_a_method_the_objective_cannot_train_with_is_swapped_for_one_that_can_with_the_reason():
    # on a CPU, a generation task ends in prompt tuning; ORPO cannot drop its virtual tokens before the loss
    plain = advise(AdvisorInputs(params_b=0.135, cpu_only=True, ram_gb=32, task="generation"))
    assert plain.method == "prompt_tuning"
    orpo = advise(AdvisorInputs(params_b=0.135, cpu_only=True, ram_gb=32, task="generation",
                                data_format="preference"))
    assert orpo.objective["name"] == "orpo" and orpo.method not in ("prompt_tuning", "p_tuning")
    swap = next(s for s in orpo.path if s.node == "objective_method")
    assert "prompt_tuning" in swap.question and orpo.method in swap.detail
    assert orpo.path[-1].answer == orpo.method and orpo.runner_up not in ("prompt_tuning", "p_tuning")
    assert "DPO from it is the usual next step" in " ".join(orpo.reasons)
