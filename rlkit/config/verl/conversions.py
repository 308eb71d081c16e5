"""The verl keys whose translation is more than a rename: what verl does with the value, and the rlkit keys that
do the same (read from verl's ppo_trainer.yaml and ray_trainer.py). A rule gets the key's value and the Context of
every layer's keys, and returns a Translation (None: a path rlkit shares, used with rlkit's meaning); RULES
(rlkit.config.verl.rules) says which key each one translates."""

from __future__ import annotations

import os
from typing import Any

from rlkit.config.verl.backends import backend_for, rollout_engines, train_engines
from rlkit.config.verl.translation import (
    ACTOR,
    MODEL,
    REF,
    ROLLOUT,
    Context,
    Rule,
    Translation,
    Unsupported,
)


def negative_means_unset(value: Any) -> Any:
    return None if value is not None and value < 0 else value


def micro_batch(value: Any, context: Context) -> Translation:
    """verl sizes the micro-batches of each pass separately; rlkit runs every pass with
    algorithm.micro_batch_size_per_device: the smallest size given keeps every pass within verl's memory."""
    if value is None:
        return Translation(note="null: nothing to set")
    smallest = min(context.get(key) for key in MICRO_BATCH_KEYS if context.given(key))
    note = "" if smallest == value else f"the smallest verl micro-batch size given, {smallest}: one for every pass"
    return Translation([("algorithm.micro_batch_size_per_device", smallest)], note)


MICRO_BATCH_KEYS = (f"{ACTOR}ppo_micro_batch_size_per_gpu", f"{ROLLOUT}log_prob_micro_batch_size_per_gpu",
                    f"{REF}log_prob_micro_batch_size_per_gpu", "critic.ppo_micro_batch_size_per_gpu",
                    "critic.forward_micro_batch_size_per_gpu")


def global_micro_batch(value: Any, context: Context) -> Translation:
    if value is None:
        return Translation(note="null: nothing to set")
    raise Unsupported("verl's global micro-batch size is deprecated there too; give the per-GPU size "
                      "(..._micro_batch_size_per_gpu), which becomes algorithm.micro_batch_size_per_device")


def dynamic_batch(value: Any, context: Context) -> Translation:
    if not value:
        return Translation(note="off: nothing to set")
    budget = context.get(f"{ACTOR}ppo_max_token_len_per_gpu", 16384)  # verl's default
    return Translation([("engine.max_tokens_per_micro_batch", budget)],
                       "micro-batches by a token budget, actor.ppo_max_token_len_per_gpu")


def token_budget(value: Any, context: Context) -> Translation:
    if context.get(f"{ACTOR}use_dynamic_bsz"):
        return Translation(note="with use_dynamic_bsz")
    return Translation(note="no effect without use_dynamic_bsz, as in verl")


def lora_rank(value: Any, context: Context) -> Translation:
    if not value:
        return Translation([("model.lora", None)], "0: no LoRA")
    return Translation([("model.lora.rank", value)])


def lora_option(option: str) -> Rule:
    def rule(value: Any, context: Context) -> Translation:
        if not context.get(f"{MODEL}lora_rank"):
            return Translation(note="no effect: LoRA is off (lora_rank is 0), as in verl")
        return Translation([(f"model.lora.{option}", value)])

    return rule


def warmup_steps(prefix: str) -> Rule:
    """verl: lr_warmup_steps wins when it is 0 or more; a negative one hands over to lr_warmup_steps_ratio."""

    def rule(value: Any, context: Context) -> Translation:
        if value is None or value < 0:
            return Translation(note="negative: verl uses lr_warmup_steps_ratio")
        return Translation([(f"{prefix}.warmup_steps", value)])

    return rule


def warmup_ratio(steps_key: str, prefix: str) -> Rule:
    def rule(value: Any, context: Context) -> Translation:
        steps = context.get(steps_key)
        if steps is not None and steps >= 0:
            return Translation(note="no effect: lr_warmup_steps is set, as in verl")
        if not value:
            return Translation(note="0: no warm-up")
        return Translation([(f"{prefix}.warmup_ratio", value)])

    return rule


def scheduler(prefix: str) -> Rule:
    def rule(value: Any, context: Context) -> Translation:
        if value is None:
            return Translation(note="null: nothing to set")
        if value not in ("constant", "cosine"):
            raise Unsupported(f"rlkit's schedules are constant and cosine ({prefix}.scheduler)")
        return Translation([(f"{prefix}.scheduler", value)])

    return rule


def optimizer(value: Any, context: Context) -> Translation:
    if str(value).lower() == "adamw":
        return Translation(note="rlkit's optimizer is AdamW: nothing to set")
    raise Unsupported("rlkit trains with AdamW only; remove the key")


def clip_ratio(value: Any, context: Context) -> Translation:
    # verl's loss takes clip_ratio_low/high, which default to 0.2 and are never null in its config, so
    # clip_ratio alone changes nothing there; rlkit follows verl, and says so.
    return Translation(note="no effect, as in verl: the clip range is clip_ratio_low/clip_ratio_high (0.2 by "
                            "default); set those")


def policy_loss(value: Any, context: Context) -> Translation:
    return Translation([("algorithm.policy_loss", "ppo" if value == "vanilla" else value)])


def strategy(value: Any, context: Context) -> Translation:
    """actor.strategy picks the training engine; ref and critic run on the actor's in rlkit."""
    name = backend_for(train_engines(), value, "training engine", "actor_rollout_ref.actor.strategy / --engine")
    return Translation([("engine.name", name)])


def same_strategy(value: Any, context: Context) -> Translation:
    actor = context.get(f"{ACTOR}strategy", value)
    if actor != value:
        raise Unsupported(f"rlkit runs the reference and the critic on the actor's engine (strategy {actor}); "
                          "give them the same strategy")
    backend_for(train_engines(), value, "training engine", "--engine")
    return Translation(note="the actor's engine")


def rollout_name(value: Any, context: Context) -> Translation:
    return Translation([("rollout.name", backend_for(rollout_engines(), value, "rollout engine", "--rollout"))])


def norm_adv_by_std(value: Any, context: Context) -> Translation:
    """GRPO without dividing by the group's std is rlkit's drgrpo advantage. verl keeps its token-mean loss
    (drgrpo's own default is seq-mean-token-sum-norm), so that is set too unless a loss_agg_mode is given."""
    estimator = context.get("algorithm.adv_estimator", "grpo")
    if value:
        return Translation(note="grpo's std scaling, as in rlkit: nothing to set")
    if estimator not in ("grpo", "drgrpo"):
        return Translation(note=f"no effect with adv_estimator={estimator}, as in verl")
    return Translation(_drgrpo_assignments(context))


def free_cache_engine(value: Any, context: Context) -> Translation:
    """verl frees the rollout's memory while training when this is True (its default). rlkit's rollout.sleep=auto
    frees it only when the trainer would lose room by keeping it, so True sets nothing; False keeps it."""
    if value:
        return Translation(note="rlkit frees the rollout's memory when the trainer needs it (rollout.sleep=auto); "
                                "set rollout.sleep=true to free it always")
    return Translation([("rollout.sleep", False)])


def adv_estimator(value: Any, context: Context) -> Translation | None:
    if value == "grpo" and context.get("algorithm.norm_adv_by_std_in_grpo", True) is False:
        return Translation(_drgrpo_assignments(context), "with norm_adv_by_std_in_grpo=False")
    return None  # rlkit's own key


def _drgrpo_assignments(context: Context) -> list[tuple[str, Any]]:
    assignments: list[tuple[str, Any]] = [("algorithm.adv_estimator", "drgrpo")]
    if not (context.given(f"{ACTOR}loss_agg_mode") or context.given("algorithm.loss_agg_mode")):
        assignments.append(("algorithm.loss_agg_mode", "token-mean"))
    return assignments


def custom_reward_path(value: Any, context: Context) -> Translation:
    if value is None:
        return Translation(note="null: the built-in reward of each data_source")
    name = context.get("custom_reward_function.name") or "compute_score"  # verl's default
    return Translation([("reward.name", f"{value}:{name}")])


def custom_reward_name(value: Any, context: Context) -> Translation:
    if context.given("custom_reward_function.path"):
        return Translation(note="with custom_reward_function.path")
    return Translation(note="no effect without custom_reward_function.path, as in verl")


def reward_manager(value: Any, context: Context) -> Translation:
    if value in ("naive", "batch", "prime", None):
        return Translation(note="rlkit's reward manager scores every sample with the reward function, as verl's "
                                f"{value or 'naive'} does: nothing to set")
    if value == "dapo":
        raise Unsupported("verl's dapo manager adds the overlong penalty: set algorithm.overlong_penalty "
                          "(buffer_length, penalty_factor) instead")
    raise Unsupported("rlkit has no such reward manager: subclass rlkit.rewards.RewardManager and name it in "
                      "reward.name (docs/rewards.md)")


def reward_model_enable(value: Any, context: Context) -> Translation:
    if not value:
        return Translation(note="off: nothing to set")
    raise Unsupported("rlkit has no reward-model worker: score with a rlkit.rewards.RewardManager subclass that "
                      "runs the model, named in reward.name (docs/rewards.md)")


def total_training_steps(value: Any, context: Context) -> Translation:
    if value is None:
        return Translation(note="null: trainer.total_epochs decides")
    return Translation([("trainer.total_steps", value)])


def critic_warmup(value: Any, context: Context) -> Translation:
    """verl updates the actor once `critic_warmup <= global_steps`, counting steps from 1, so its critic alone
    trains for critic_warmup - 1 steps."""
    steps = max(int(value or 0) - 1, 0)
    note = f"verl updates the actor from step {value}" if value and value > 1 else ""
    return Translation([("critic.warmup_steps", steps)], note)


def save_freq(value: Any, context: Context) -> Translation | None:
    if value is None or value >= 0:
        return None  # rlkit's own meaning (0: at the end only)
    # verl: save_freq <= 0 never saves, not even at the end
    return Translation([("trainer.save_freq", 0), ("trainer.save_at_end", False)], "verl never saves")


def test_freq(value: Any, context: Context) -> Translation | None:
    if value is None or value >= 0:
        return None
    return Translation([("trainer.test_freq", 0)],
                       "verl does not validate while training; rlkit still validates once at the end")


def loggers(value: Any, context: Context) -> Translation:
    names = [value] if isinstance(value, str) else list(value or [])
    known = {"console": "console", "wandb": "wandb", "tensorboard": "tensorboard", "file": "jsonl"}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise Unsupported(f"rlkit logs to console, jsonl (verl's file), tensorboard and wandb; {', '.join(unknown)} "
                          "is not one of them")
    return Translation([("trainer.loggers", [known[name] for name in names])])


def output_dir(value: Any, context: Context) -> Translation:
    return Translation([("trainer.output_dir", value)], "checkpoints go to OUTPUT_DIR/checkpoints")


def resume_mode(value: Any, context: Context) -> Translation:
    if value in ("auto", "disable"):
        return Translation([("trainer.resume", value)])
    if value == "resume_path":
        path = context.get("trainer.resume_from_path")
        if not path:
            raise Unsupported("resume_mode=resume_path needs trainer.resume_from_path (or write trainer.resume=PATH)")
        return Translation([("trainer.resume", path)])
    raise Unsupported("verl's resume modes are auto, disable and resume_path")


def resume_from_path(value: Any, context: Context) -> Translation:
    if context.get("trainer.resume_mode") == "resume_path":
        return Translation(note="with resume_mode=resume_path")
    return Translation(note="no effect unless resume_mode=resume_path, as in verl")


def launcher(value: Any, context: Context) -> Translation:
    """verl starts its workers itself; rlkit runs on the processes torchrun starts."""
    gpus, nodes = context.get("trainer.n_gpus_per_node", 8), context.get("trainer.nnodes", 1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    note = (f"rlkit runs on the processes its launcher starts: torchrun --nnodes={nodes} --nproc_per_node={gpus} "
            f"-m rlkit train ...")
    if gpus * nodes != world:
        note += f"; this run has {world}"
    return Translation(note=note)


def device(value: Any, context: Context) -> Translation | None:
    if value in ("auto", "cuda", "cpu"):
        return None  # rlkit's own key and values
    raise Unsupported("rlkit runs on cuda or cpu (trainer.device)")


def same_as_actor(actor_key: str, shared_key: str) -> Rule:
    """verl lets the critic differ from the actor here; rlkit's critic uses the actor's setting (`shared_key`)."""

    def rule(value: Any, context: Context) -> Translation:
        actor = context.get(actor_key)
        if actor == value:
            return Translation(note=f"the actor's {shared_key}, which the critic shares in rlkit")
        raise Unsupported(f"rlkit's critic shares {shared_key} with the actor; set {actor_key}={value} too, or drop "
                          "this key")

    return rule
