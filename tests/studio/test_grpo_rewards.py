"""GRPO's rewards and spec, torch-free (studio/objectives/rewards.py, studio/objectives/grpo.py): the built-in
rewards over strings, the ``reward`` setting's names, weights and patterns, and what is refused before a job is
queued with what to write instead."""
import pytest

from studio import methods, objectives
from studio.objectives import rewards
from studio.objectives.rewards import Reward, answer_format, exact_match, length_penalty, numeric_match
from studio.objectives.spec import ObjectiveError


@pytest.mark.parametrize("completion, reference, expected", [
    ("She has 5 + 37 = 42 apples.\n#### 42", "#### 42", 1.0),
    ("so the answer is \\boxed{42}", "Natalia sold 48/2 = 24 clips in May.\n#### 42", 1.0),
    ("42", "42", 1.0),
    ("The total is 1,000 dollars.", "#### 1000", 1.0),
    ("It drops to -3.50 degrees", "-3.5", 1.0),
    ("42.0", "#### 42", 1.0),
    ("#### 42 and then 7", "#### 42", 0.0),  # the last number counts
    ("The answer is 41.", "#### 42", 0.0),
    ("-42", "42", 0.0),
    ("no number here", "#### 42", 0.0),
    ("", "#### 42", 0.0),
    ("42", "#### forty-two", 0.0),  # a reference without a number matches nothing
])
def test_numeric_match_compares_the_last_number_with_the_reference_final_number(completion, reference, expected):
    assert numeric_match(completion, reference) == expected


def test_exact_match_compares_the_final_answers_as_text():
    assert exact_match("so #### 18", "18") == 1.0
    assert exact_match("the value is \\boxed{x + 1}", "\\boxed{X  + 1}") == 1.0  # case and spacing aside
    assert exact_match("\\boxed{x+2}", "\\boxed{x+1}") == 0.0
    assert exact_match("nothing final", "#### 3") == 0.0


def test_format_length_and_their_variants():
    assert answer_format("work... #### 7") == 1.0 and answer_format("\\boxed{7}") == 1.0
    assert answer_format("the answer is 7") == 0.0 and answer_format("#### ") == 0.0
    assert answer_format("\\boxed{7}", "hashes") == 0.0 and answer_format("#### 7", "boxed") == 0.0
    assert length_penalty(10, 10) == 0.0 and length_penalty(15, 10) == -0.5 and length_penalty(500, 10) == -1.0


def test_the_reward_setting_parses_names_weights_and_arguments():
    assert rewards.parse("numeric_match", 256) == [Reward("numeric_match", None, 1.0)]
    parsed = rewards.parse("numeric_match:2, exact_match:-0.5,format=boxed:0.25,length,regex:^\\d{1,3}$:0.5,"
                           "reward_model=7", 256)
    assert parsed == [Reward("numeric_match", None, 2.0), Reward("exact_match", None, -0.5),
                      Reward("format", "boxed", 0.25), Reward("length", 128, 1.0), Reward("regex", "^\\d{1,3}$", 0.5),
                      Reward("reward_model", 7, 1.0)]  # length's budget: half of max_completion_length
    assert rewards.parse("regex:a\\,b", 64) == [Reward("regex", "a\\,b", 1.0)]  # an escaped comma stays
    assert rewards.parse("length=32:0.1", 64)[0].describe() == "length=32:0.1"


@pytest.mark.parametrize("setting, message", [
    ("numeric", r"unknown reward 'numeric'. Use a comma list of numeric_match, exact_match, regex:PATTERN"),
    ("numeric_match:0", r"reward 'numeric_match' has weight 0: give a weight between -100 and 100, not 0"),
    ("numeric_match:1e9", r"has weight 1e9"),
    ("numeric_match:abc", r"unknown reward 'numeric_match:abc'"),
    ("regex:([a-z]", r"regex '\(\[a-z\]' does not compile \(missing \), unterminated subpattern"),
    ("regex:", r"regex needs its pattern"),
    ("regex", r"regex needs its pattern, e.g. regex:"),
    ("format=xml", r"format='xml' is not a format: use format \(either\), format=hashes"),
    ("length=0", r"length='0': give the token budget as a whole number from 1 to max_completion_length \(64\)"),
    ("length=100", r"from 1 to max_completion_length \(64\)"),
    ("reward_model=latest", r"reward_model needs a version id, e.g. reward_model=7"),
    ("numeric_match=3", r"reward numeric_match takes no value"),
    ("numeric_match,numeric_match:2", r"reward numeric_match is given twice"),
    ("regex:a,regex:b", r"reward regex is given twice; name each reward once \(combine two patterns into one regex"),
    ("", r"reward is empty"),
    ("numeric_match,,format", r"has an empty item between commas"),
])
def test_a_bad_reward_setting_is_refused_with_what_to_write(setting, message):
    with pytest.raises(ObjectiveError, match=message):
        rewards.parse(setting, 64)


def test_the_grpo_spec_parses_its_settings_and_refuses_what_cannot_train():
    params = objectives.parse_params("grpo", {"num_generations": "8", "beta": "0.001", "reward": "numeric_match:2"},
                                     methods.get("lora"))
    assert (params.num_generations, params.beta, params.loss_type, params.max_completion_length) == (8, 0.001, "dapo",
                                                                                                   256)
    spec = objectives.get("grpo")
    assert (spec.task, spec.formats, spec.needs_reference_model) == ("causal_lm", ("qa",), False)
    # the reference and the generations depend on the settings: the flags the memory estimate reads
    assert objectives.flags_for(spec, params) == {"needs_reference_model": True, "pairs": False,
                                                  "sequences_per_row": 8}
    assert objectives.flags_for(spec, spec.params())["needs_reference_model"] is False  # beta 0: no reference
    assert {"reward", "rewards/numeric_match/mean", "rewards/reward_model/mean", "kl",
            "completions/mean_length"} <= set(spec.curves)
    with pytest.raises(ObjectiveError, match=r"grpo: unknown reward 'accuracy'"):
        objectives.parse_params("grpo", {"reward": "accuracy"}, methods.get("lora"))
    with pytest.raises(ObjectiveError, match=r"grpo with beta 0.1 .*adalora model only one adapter. Set --set beta=0"):
        objectives.parse_params("grpo", {"beta": "0.1"}, methods.get("adalora"))
    objectives.parse_params("grpo", {"beta": "0"}, methods.get("adalora"))  # no reference: one adapter is enough
    with pytest.raises(ObjectiveError, match=r"prompt_tuning prepends virtual tokens"):
        objectives.check_method(spec, methods.get("prompt_tuning"))
    with pytest.raises(ObjectiveError, match=r"grpo: num_generations must be >= 2 \(got 1\). Set --set num_generations=2"):
        objectives.parse_params("grpo", {"num_generations": "1"})
    with pytest.raises(ObjectiveError, match=r"loss_type must be one of dapo, grpo, dr_grpo"):
        objectives.parse_params("grpo", {"loss_type": "ppo"})


def test_rloo_takes_the_same_rewards_and_says_its_own_name():
    params = objectives.parse_params("rloo", {"reward": "exact_match,format:0.1"}, methods.get("lora"))
    assert (params.beta, params.num_generations) == (0.05, 4)  # TRL's RLOO default: a KL term, so a reference
    assert objectives.flags_for(objectives.get("rloo"), params)["needs_reference_model"] is True
    assert objectives.get("rloo").formats == ("qa",) and objectives.default_for("qa").name == "grpo"
    with pytest.raises(ObjectiveError, match=r"rloo: unknown reward 'f1'"):
        objectives.parse_params("rloo", {"reward": "f1"}, methods.get("lora"))
    with pytest.raises(ObjectiveError, match=r"rloo with beta 0.05 .*adalora"):
        objectives.parse_params("rloo", {}, methods.get("adalora"))


def test_a_batch_must_hold_whole_groups_of_generations():
    params = objectives.parse_params("grpo", {"num_generations": "4"})
    objectives.check_job(objectives.get("grpo"), params, {"per_device_train_batch_size": 2,
                                                          "gradient_accumulation_steps": 2}, None)
    with pytest.raises(ObjectiveError, match=r"per_device_train_batch_size x gradient_accumulation_steps is 6, not a "
                                             r"multiple of num_generations \(4\)"):
        objectives.check_job(objectives.get("grpo"), params, {"per_device_train_batch_size": 3,
                                                              "gradient_accumulation_steps": 2}, None)
