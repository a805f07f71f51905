"""GRPO (group relative policy optimisation) on TRL's GRPOTrainer: online RL from verifiable answers. For every
prompt the policy writes ``num_generations`` completions, the rewards (studio/objectives/rewards.py: numeric_match,
exact_match, regex, format, length, a reward model version) score them, and each completion is pushed up or down
by how it compares with its group. Trains on qa data: questions with a reference answer. RLOO (REINFORCE
leave-one-out, TRL's RLOOTrainer: each completion's baseline is the mean reward of the others in its group, the KL
folded into the reward) takes the same data, rewards and recipe with its own spec below."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

from studio.objectives import rewards
from studio.objectives.spec import ObjectiveError, ObjectiveSpec, register

# TRL 1.16's GRPOConfig.loss_type values that need no other setting (luspo and vespo want sequence-level
# importance sampling, which the studio does not expose).
LOSSES = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo")


def _generations():
    return field(default=4, metadata={
        "help": "Completions sampled per prompt: the group each one is compared with. More gives a steadier "
                "signal and costs generation time and memory in proportion. per_device_train_batch_size x "
                "gradient_accumulation_steps must be a multiple of it (the batch holds whole groups).",
        "min": 2, "max": 64})


def _completion_length():
    return field(default=256, metadata={
        "help": "Longest completion sampled, in tokens; longer ones are cut (completions/clipped_ratio counts "
                "them). Generation time grows with it.", "min": 4, "max": 8192})


def _temperature():
    return field(default=1.0, metadata={
        "help": "Sampling temperature of the completions: higher gives more varied groups (the rewards need "
                "some spread to learn from).", "min": 0.05, "max": 2.0})


def _reward():
    return field(default="numeric_match", metadata={
        "help": "Rewards, comma-separated, each NAME or NAME:WEIGHT: numeric_match (last number = the reference's "
                "final number), exact_match (the final answer as text), regex:PATTERN, format (a final answer "
                "after #### or in \\boxed{}; format=hashes or format=boxed for one of them), length=TOKENS (a "
                "penalty beyond the budget), reward_model=VERSION (a reward model trained here)."})


@dataclass(frozen=True)
class GRPOParams:
    num_generations: int = _generations()
    max_completion_length: int = _completion_length()
    beta: float = field(default=0.0, metadata={
        "help": "KL coefficient: how strongly the policy is held near the starting model. 0 (TRL's default) "
                "loads no reference model at all: less memory and time. DeepSeek-R1 used 0.001. Above 0, the "
                "reference is the start (base or --from-version), as for DPO.", "min": 0.0, "max": 10.0})
    temperature: float = _temperature()
    loss_type: str = field(default="dapo", metadata={
        "help": "How token losses are averaged: dapo (TRL's default: over the tokens of the whole batch, no "
                "length bias), grpo (per sequence, the paper's; favours short right answers), dr_grpo (by a "
                "constant, max_completion_length), bnpo (over the local batch's tokens), cispo (clips the "
                "importance weights, MiniMax-M1), sapo (a soft gate instead of clipping).", "choices": LOSSES})
    reward: str = _reward()


@dataclass(frozen=True)
class RLOOParams:
    num_generations: int = _generations()
    max_completion_length: int = _completion_length()
    beta: float = field(default=0.05, metadata={
        "help": "KL coefficient, folded into each completion's reward: how strongly the policy is held near the "
                "starting model (TRL's RLOO default 0.05). 0 loads no reference model at all: less memory and time.",
        "min": 0.0, "max": 10.0})
    temperature: float = _temperature()
    reward: str = _reward()


def check(name: str, params: GRPOParams | RLOOParams, method) -> None:
    """The rewards parse (names, weights, patterns), and a reference (beta > 0) can be kept for the method."""
    rewards.parse(params.reward, params.max_completion_length, name)
    if params.beta > 0 and method.single_adapter:
        raise ObjectiveError(
            f"{name} with beta {params.beta:g} compares the policy with a frozen reference, which TRL keeps as a copy of "
            f"the starting adapter beside the trained one; peft allows a {method.name} model only one adapter. Set "
            f"--set beta=0 (no reference), or use lora or dora.")


def check_job(name: str, params: GRPOParams | RLOOParams, training: dict, session) -> None:
    """Before queueing: the batch holds whole groups, and every reward_model= names a reward model version."""
    per_step = training.get("per_device_train_batch_size", 1) * training.get("gradient_accumulation_steps", 1)
    if per_step % params.num_generations:
        raise ObjectiveError(
            f"{name}: per_device_train_batch_size x gradient_accumulation_steps is {per_step}, not a multiple of "
            f"num_generations ({params.num_generations}): each batch must hold whole groups of completions. Set "
            f"--set per_device_train_batch_size={params.num_generations} (or a multiple), or lower num_generations.")
    for r in rewards.parse(params.reward, params.max_completion_length, name):
        if r.name == "reward_model":
            _check_reward_model(name, session, r.arg)


def _check_reward_model(name: str, session, version_id: int) -> None:
    from models_db import ModelVersion
    from models_db.access import hidden_reason

    version = session.get(ModelVersion, version_id)
    if version is None:
        raise ObjectiveError(f"{name}: reward_model={version_id}: "
                             + (hidden_reason(session, ModelVersion, version_id)
                                or f"version {version_id} does not exist (studio versions list)."))
    objective = (version.config or {}).get("objective") or "sft"
    if objective != "reward":
        raise ObjectiveError(
            f"{name}: reward_model={version_id}: version {version_id} ({version.name}) was trained with objective "
            f"{objective}, not a reward model. Give a version trained with --objective reward on preference pairs, "
            f"or train one first.")


# TRL's GRPO and RLOO log the same figures; rewards/NAME/mean for each reward the job names
CURVES = ("reward", "reward_std", *(f"rewards/{name}/mean" for name in rewards.NAMES), "kl", "completions/mean_length",
          "completions/clipped_ratio", "entropy")

SPEC = register(ObjectiveSpec(
    samples_completions=True,
    name="grpo",
    params=GRPOParams,
    summary="GRPO: sample several answers per prompt, score them with rewards, and learn from the better ones.",
    task="causal_lm",
    formats=("qa",),
    title="GRPO (objective grpo)",
    data_help="qa data: questions with a reference answer (question/answer or prompt/answer columns, the answer "
              "ending in '#### N', a \\boxed{} or a number; a file read as instruction data registers as qa with "
              "--format qa)",
    suggest="Train it with objective grpo (rewards such as numeric_match)",
    check=functools.partial(check, "grpo"),
    check_job=functools.partial(check_job, "grpo"),
    flags=lambda p: {"needs_reference_model": p.beta > 0, "sequences_per_row": p.num_generations},
    takes_prepended_tokens=False,  # TRL's GRPO reads the logits of the completion tokens by position
    # Not measured yet: TRL's GRPO default (1e-6, full fine-tuning) is SFT's 2e-5 x 0.05; LoRA gets 1e-5.
    learning_rate_scale=0.05,
    curves=CURVES,
))

RLOO = register(ObjectiveSpec(
    samples_completions=True,
    name="rloo",
    params=RLOOParams,
    summary="RLOO: sample several answers per prompt, score them with rewards, baseline each by the others'.",
    task="causal_lm",
    formats=("qa",),
    title="RLOO (objective rloo)",
    data_help=SPEC.data_help,
    suggest="Train it with objective grpo or rloo",
    check=functools.partial(check, "rloo"),
    check_job=functools.partial(check_job, "rloo"),
    flags=lambda p: {"needs_reference_model": p.beta > 0, "sequences_per_row": p.num_generations},
    takes_prepended_tokens=False,
    learning_rate_scale=0.05,  # TRL's RLOO default is GRPO's (1e-6, full); not measured yet
    curves=CURVES,
))
