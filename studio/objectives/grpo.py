"""GRPO (group relative policy optimisation) on TRL's GRPOTrainer: online RL from verifiable answers. For every
prompt the policy writes ``num_generations`` completions, the rewards (studio/objectives/rewards.py: numeric_match,
exact_match, regex, format, length, a reward model version) score them, and each completion is pushed up or down
by how it compares with its group. Trains on qa data: questions with a reference answer."""
from __future__ import annotations

from dataclasses import dataclass, field

from studio.objectives import rewards
from studio.objectives.spec import ObjectiveError, ObjectiveSpec, register

# TRL 1.16's GRPOConfig.loss_type values that need no other setting (luspo and vespo want sequence-level
# importance sampling, which the studio does not expose).
LOSSES = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo")


@dataclass(frozen=True)
class GRPOParams:
    num_generations: int = field(default=4, metadata={
        "help": "Completions sampled per prompt: the group each one is compared with. More gives a steadier "
                "signal and costs generation time and memory in proportion. per_device_train_batch_size x "
                "gradient_accumulation_steps must be a multiple of it (the batch holds whole groups).",
        "min": 2, "max": 64})
    max_completion_length: int = field(default=256, metadata={
        "help": "Longest completion sampled, in tokens; longer ones are cut (completions/clipped_ratio counts "
                "them). Generation time grows with it.", "min": 4, "max": 8192})
    beta: float = field(default=0.0, metadata={
        "help": "KL coefficient: how strongly the policy is held near the starting model. 0 (TRL's default) "
                "loads no reference model at all: less memory and time. DeepSeek-R1 used 0.001. Above 0, the "
                "reference is the start (base or --from-version), as for DPO.", "min": 0.0, "max": 10.0})
    temperature: float = field(default=1.0, metadata={
        "help": "Sampling temperature of the completions: higher gives more varied groups (the rewards need "
                "some spread to learn from).", "min": 0.05, "max": 2.0})
    loss_type: str = field(default="dapo", metadata={
        "help": "How token losses are averaged: dapo (TRL's default: over the tokens of the whole batch, no "
                "length bias), grpo (per sequence, the paper's; favours short right answers), dr_grpo (by a "
                "constant, max_completion_length), bnpo (over the local batch's tokens), cispo (clips the "
                "importance weights, MiniMax-M1), sapo (a soft gate instead of clipping).", "choices": LOSSES})
    reward: str = field(default="numeric_match", metadata={
        "help": "Rewards, comma-separated, each NAME or NAME:WEIGHT: numeric_match (last number = the reference's "
                "final number), exact_match (the final answer as text), regex:PATTERN, format (a final answer "
                "after #### or in \\boxed{}; format=hashes or format=boxed for one of them), length=TOKENS (a "
                "penalty beyond the budget), reward_model=VERSION (a reward model trained here)."})


def check(params: GRPOParams, method) -> None:
    """The rewards parse (names, weights, patterns), and a reference (beta > 0) can be kept for the method."""
    rewards.parse(params.reward, params.max_completion_length)
    if params.beta > 0 and method.single_adapter:
        raise ObjectiveError(
            f"grpo with beta {params.beta:g} compares the policy with a frozen reference, which TRL keeps as a copy of "
            f"the starting adapter beside the trained one; peft allows a {method.name} model only one adapter. Set "
            f"--set beta=0 (no reference), or use lora or dora.")


def check_job(params: GRPOParams, training: dict, session) -> None:
    """Before queueing: the batch holds whole groups, and every reward_model= names a reward model version."""
    per_step = training.get("per_device_train_batch_size", 1) * training.get("gradient_accumulation_steps", 1)
    if per_step % params.num_generations:
        raise ObjectiveError(
            f"grpo: per_device_train_batch_size x gradient_accumulation_steps is {per_step}, not a multiple of "
            f"num_generations ({params.num_generations}): each batch must hold whole groups of completions. Set "
            f"--set per_device_train_batch_size={params.num_generations} (or a multiple), or lower num_generations.")
    for r in rewards.parse(params.reward, params.max_completion_length):
        if r.name == "reward_model":
            _check_reward_model(session, r.arg)


def _check_reward_model(session, version_id: int) -> None:
    from models_db import ModelVersion
    from models_db.access import hidden_reason

    version = session.get(ModelVersion, version_id)
    if version is None:
        raise ObjectiveError(f"grpo: reward_model={version_id}: "
                             + (hidden_reason(session, ModelVersion, version_id)
                                or f"version {version_id} does not exist (studio versions list)."))
    objective = (version.config or {}).get("objective") or "sft"
    if objective != "reward":
        raise ObjectiveError(
            f"grpo: reward_model={version_id}: version {version_id} ({version.name}) was trained with objective "
            f"{objective}, not a reward model. Give a version trained with --objective reward on preference pairs, "
            f"or train one first.")


SPEC = register(ObjectiveSpec(
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
    check=check,
    check_job=check_job,
    flags=lambda p: {"needs_reference_model": p.beta > 0, "sequences_per_row": p.num_generations},
    takes_prepended_tokens=False,  # TRL's GRPO reads the logits of the completion tokens by position
    # Not measured yet: TRL's GRPO default (1e-6, full fine-tuning) is SFT's 2e-5 x 0.05; LoRA gets 1e-5.
    learning_rate_scale=0.05,
    curves=("reward", "reward_std", *(f"rewards/{name}/mean" for name in rewards.NAMES), "kl",
            "completions/mean_length", "completions/clipped_ratio", "entropy"),
))
