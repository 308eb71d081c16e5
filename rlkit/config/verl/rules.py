"""What each verl key means in rlkit: RULES, verl key -> rule. Where a translation is more than a rename, its
rule says what verl does (read from verl's ppo_trainer.yaml and ray_trainer.py)."""

from __future__ import annotations

import os
from typing import Any

from rlkit.config.verl.translation import (
    Context,
    Rule,
    Translation,
    Unsupported,
    accepted,
    interpolation_free,
    no_effect,
    rename,
)

VERL_SECTIONS = ("actor_rollout_ref", "custom_reward_function", "reward_model", "reward_manager", "global_profiler",
                 "ray_kwargs", "transfer_queue", "hydra", "defaults")
_ACTOR = "actor_rollout_ref.actor."
_MODEL = "actor_rollout_ref.model."
_ROLLOUT = "actor_rollout_ref.rollout."
_REF = "actor_rollout_ref.ref."


# -- the backends (their verl names are in their registry entries) ----------------------------------
def train_engines() -> Any:
    from rlkit.registry import TRAIN_ENGINES

    return TRAIN_ENGINES


def rollout_engines() -> Any:
    from rlkit.registry import ROLLOUT_ENGINES

    return ROLLOUT_ENGINES


def _backend_for(registry: Any, verl_name: Any, kind: str, flag: str) -> str:
    for entry in registry.entries():
        if entry.backend is not None and verl_name in entry.backend.verl_names:
            return entry.name
    names = ", ".join(f"{entry.name} (verl {'/'.join(entry.backend.verl_names)})" for entry in registry.entries()
                      if entry.backend is not None and entry.backend.verl_names)
    raise Unsupported(f"rlkit has no {kind} for verl's {verl_name!r}; choose one of {names} with {flag}")


# -- rules that are more than a rename ---------------------------------------------------------------
def _negative_means_unset(value: Any) -> Any:
    return None if value is not None and value < 0 else value


def micro_batch(value: Any, context: Context) -> Translation:
    """verl sizes the micro-batches of each pass separately; rlkit runs every pass with
    algorithm.micro_batch_size_per_device: the smallest size given keeps every pass within verl's memory."""
    if value is None:
        return Translation(note="null: nothing to set")
    smallest = min(context.get(key) for key in MICRO_BATCH_KEYS if context.given(key))
    note = "" if smallest == value else f"the smallest verl micro-batch size given, {smallest}: one for every pass"
    return Translation([("algorithm.micro_batch_size_per_device", smallest)], note)


MICRO_BATCH_KEYS = (f"{_ACTOR}ppo_micro_batch_size_per_gpu", f"{_ROLLOUT}log_prob_micro_batch_size_per_gpu",
                    f"{_REF}log_prob_micro_batch_size_per_gpu", "critic.ppo_micro_batch_size_per_gpu",
                    "critic.forward_micro_batch_size_per_gpu")


def global_micro_batch(value: Any, context: Context) -> Translation:
    if value is None:
        return Translation(note="null: nothing to set")
    raise Unsupported("verl's global micro-batch size is deprecated there too; give the per-GPU size "
                      "(..._micro_batch_size_per_gpu), which becomes algorithm.micro_batch_size_per_device")


def dynamic_batch(value: Any, context: Context) -> Translation:
    if not value:
        return Translation(note="off: nothing to set")
    budget = context.get(f"{_ACTOR}ppo_max_token_len_per_gpu", 16384)  # verl's default
    return Translation([("engine.max_tokens_per_micro_batch", budget)],
                       "micro-batches by a token budget, actor.ppo_max_token_len_per_gpu")


def token_budget(value: Any, context: Context) -> Translation:
    if context.get(f"{_ACTOR}use_dynamic_bsz"):
        return Translation(note="with use_dynamic_bsz")
    return Translation(note="no effect without use_dynamic_bsz, as in verl")


def lora_rank(value: Any, context: Context) -> Translation:
    if not value:
        return Translation([("model.lora", None)], "0: no LoRA")
    return Translation([("model.lora.rank", value)])


def lora_option(option: str) -> Rule:
    def rule(value: Any, context: Context) -> Translation:
        if not context.get(f"{_MODEL}lora_rank"):
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
    name = _backend_for(train_engines(), value, "training engine", "actor_rollout_ref.actor.strategy / --engine")
    return Translation([("engine.name", name)])


def same_strategy(value: Any, context: Context) -> Translation:
    actor = context.get(f"{_ACTOR}strategy", value)
    if actor != value:
        raise Unsupported(f"rlkit runs the reference and the critic on the actor's engine (strategy {actor}); "
                          "give them the same strategy")
    _backend_for(train_engines(), value, "training engine", "--engine")
    return Translation(note="the actor's engine")


def rollout_name(value: Any, context: Context) -> Translation:
    return Translation([("rollout.name", _backend_for(rollout_engines(), value, "rollout engine", "--rollout"))])


def norm_adv_by_std(value: Any, context: Context) -> Translation:
    """GRPO without dividing by the group's std is rlkit's drgrpo advantage. verl keeps its token-mean loss
    (drgrpo's own default is seq-mean-token-sum-norm), so that is set too unless a loss_agg_mode is given."""
    estimator = context.get("algorithm.adv_estimator", "grpo")
    if value:
        return Translation(note="grpo's std scaling, as in rlkit: nothing to set")
    if estimator not in ("grpo", "drgrpo"):
        return Translation(note=f"no effect with adv_estimator={estimator}, as in verl")
    return Translation(_drgrpo_assignments(context))


def adv_estimator(value: Any, context: Context) -> Translation | None:
    if value == "grpo" and context.get("algorithm.norm_adv_by_std_in_grpo", True) is False:
        return Translation(_drgrpo_assignments(context), "with norm_adv_by_std_in_grpo=False")
    return None  # rlkit's own key


def _drgrpo_assignments(context: Context) -> list[tuple[str, Any]]:
    assignments: list[tuple[str, Any]] = [("algorithm.adv_estimator", "drgrpo")]
    if not (context.given(f"{_ACTOR}loss_agg_mode") or context.given("algorithm.loss_agg_mode")):
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


def _optimizer_rules(verl_prefix: str, prefix: str, *, shared: bool) -> dict[str, Rule]:
    rules: dict[str, Rule] = {
        f"{verl_prefix}.lr_warmup_steps": warmup_steps(prefix),
        f"{verl_prefix}.lr_warmup_steps_ratio": warmup_ratio(f"{verl_prefix}.lr_warmup_steps", prefix),
        f"{verl_prefix}.clip_grad": rename(f"{prefix}.grad_clip"),
        f"{verl_prefix}.lr_scheduler_type": scheduler(prefix),
        f"{verl_prefix}.warmup_style": scheduler(prefix),
        f"{verl_prefix}.optimizer": optimizer,
        f"{verl_prefix}.total_training_steps": accepted(-1, None, advice="rlkit derives it from the run's length"),
    }
    if not shared:  # the critic's optimizer keys are rlkit's own paths already
        rules.update({f"{verl_prefix}.{key}": rename(f"{prefix}.{key}")
                      for key in ("lr", "weight_decay", "betas", "min_lr_ratio")})
    return rules


RULES: dict[str, Rule] = {
    # data
    "data.max_response_length": rename("rollout.max_new_tokens"),
    "data.train_max_samples": rename("data.max_train_samples", _negative_means_unset),
    "data.val_max_samples": rename("data.max_val_samples", _negative_means_unset),
    # model
    f"{_MODEL}path": rename("model.path"),
    f"{_MODEL}tokenizer_path": rename("model.tokenizer_path"),
    f"{_MODEL}trust_remote_code": rename("model.trust_remote_code"),
    f"{_MODEL}enable_gradient_checkpointing": rename("engine.gradient_checkpointing"),
    f"{_MODEL}use_remove_padding": rename("engine.pack_sequences", note="verl's padding-free forward"),
    f"{_MODEL}lora_rank": lora_rank,
    f"{_MODEL}lora_alpha": lora_option("alpha"),
    f"{_MODEL}target_modules": lora_option("target_modules"),
    f"{_MODEL}use_shm": accepted(False, advice="rlkit loads models from disk; remove the key"),
    f"{_MODEL}use_liger": accepted(False, advice="rlkit has no Liger kernels; remove the key"),
    f"{_MODEL}use_fused_kernels": accepted(False, advice="rlkit has no fused kernels; try engine.torch_compile=true"),
    f"{_MODEL}enable_activation_offload": accepted(False, advice="use engine.gradient_checkpointing=true instead"),
    f"{_MODEL}external_lib": accepted(None, advice="import the library from a reward or engine plugin instead"),
    # actor
    **_optimizer_rules(f"{_ACTOR}optim", "optim", shared=False),
    f"{_ACTOR}grad_clip": rename("optim.grad_clip"),
    f"{_ACTOR}ppo_mini_batch_size": rename("algorithm.mini_batch_size"),
    f"{_ACTOR}ppo_micro_batch_size_per_gpu": micro_batch,
    f"{_ACTOR}ppo_micro_batch_size": global_micro_batch,
    f"{_ACTOR}ppo_epochs": rename("algorithm.ppo_epochs"),
    f"{_ACTOR}use_dynamic_bsz": dynamic_batch,
    f"{_ACTOR}ppo_max_token_len_per_gpu": token_budget,
    **{f"{_ACTOR}{key}": rename(f"algorithm.{key}")
       for key in ("use_kl_loss", "kl_loss_coef", "kl_loss_type", "entropy_coeff", "loss_agg_mode", "clip_ratio_low",
                   "clip_ratio_high", "clip_ratio_c")},
    f"{_ACTOR}clip_ratio": clip_ratio,
    f"{_ACTOR}policy_loss.loss_mode": policy_loss,
    f"{_ACTOR}strategy": strategy,
    f"{_ACTOR}ulysses_sequence_parallel_size": accepted(1, advice="rlkit has no sequence parallelism; set 1"),
    f"{_ACTOR}shuffle": accepted(False, advice="rlkit keeps the mini-batches in order; remove the key"),
    f"{_ACTOR}use_torch_compile": no_effect("verl compiles its entropy function; rlkit's engine.torch_compile "
                                            "compiles the decoder layers too, so set that yourself"),
    # rollout
    f"{_ROLLOUT}name": rollout_name,
    **{f"{_ROLLOUT}{key}": rename(f"rollout.{key}") for key in ("n", "temperature", "top_p", "top_k", "ignore_eos")},
    f"{_ROLLOUT}response_length": rename("rollout.max_new_tokens"),
    f"{_ROLLOUT}prompt_length": rename("data.max_prompt_length"),
    f"{_ROLLOUT}val_kwargs.temperature": rename("rollout.val_temperature"),
    f"{_ROLLOUT}val_kwargs.n": rename("rollout.val_n"),
    f"{_ROLLOUT}val_kwargs.do_sample": no_effect("sampling follows val_kwargs.temperature (0 is greedy)"),
    f"{_ROLLOUT}do_sample": accepted(True, advice="set rollout.temperature=0 for greedy responses"),
    f"{_ROLLOUT}log_prob_micro_batch_size_per_gpu": micro_batch,
    f"{_ROLLOUT}log_prob_micro_batch_size": global_micro_batch,
    f"{_ROLLOUT}mode": no_effect("rlkit generates in the training processes, one batch at a time"),
    f"{_ROLLOUT}free_cache_engine": accepted(True, advice="set rollout.vllm.sleep_level=0 or "
                                             "rollout.sglang.release_memory=false to keep the rollout's memory"),
    f"{_ROLLOUT}multi_turn.enable": accepted(False, advice="set environment.name (tools, or your own environment) "
                                             "and rollout.max_turns instead (docs/environments.md)"),
    # reference
    f"{_REF}log_prob_micro_batch_size_per_gpu": micro_batch,
    f"{_REF}log_prob_micro_batch_size": global_micro_batch,
    f"{_REF}strategy": same_strategy,
    f"{_REF}ulysses_sequence_parallel_size": accepted(1, advice="rlkit has no sequence parallelism; set 1"),
    "actor_rollout_ref.hybrid_engine": accepted(True, advice="rlkit always colocates training and generation"),
    # critic
    "critic.model.path": rename("critic.model_path"),
    "critic.model.tokenizer_path": no_effect("the critic uses the policy's tokenizer"),
    "critic.ppo_micro_batch_size_per_gpu": micro_batch,
    "critic.forward_micro_batch_size_per_gpu": micro_batch,
    "critic.ppo_micro_batch_size": global_micro_batch,
    "critic.strategy": same_strategy,
    "critic.ppo_mini_batch_size": same_as_actor(f"{_ACTOR}ppo_mini_batch_size", "algorithm.mini_batch_size"),
    "critic.ppo_epochs": same_as_actor(f"{_ACTOR}ppo_epochs", "algorithm.ppo_epochs"),
    "critic.model.enable_gradient_checkpointing": same_as_actor(f"{_MODEL}enable_gradient_checkpointing",
                                                                "engine.gradient_checkpointing"),
    "critic.model.use_remove_padding": same_as_actor(f"{_MODEL}use_remove_padding", "engine.pack_sequences"),
    "critic.model.fsdp_config.param_offload": same_as_actor(f"{_ACTOR}fsdp_config.param_offload",
                                                            "the engine block's offload options"),
    "critic.model.fsdp_config.optimizer_offload": same_as_actor(f"{_ACTOR}fsdp_config.optimizer_offload",
                                                                "the engine block's offload options"),
    **_optimizer_rules("critic.optim", "critic.optim", shared=True),
    # algorithm
    "algorithm.norm_adv_by_std_in_grpo": norm_adv_by_std,
    "algorithm.adv_estimator": adv_estimator,
    "algorithm.use_pf_ppo": accepted(False, advice="rlkit has no PF-PPO reweighting; remove the key"),
    # reward
    "custom_reward_function.path": custom_reward_path,
    "custom_reward_function.name": custom_reward_name,
    "custom_reward_function.reward_kwargs": rename("reward.kwargs"),
    "reward_model.reward_manager": reward_manager,
    "reward_manager.name": reward_manager,
    "reward_model.enable": reward_model_enable,
    "reward_model.launch_reward_fn_async": accepted(False, advice="rlkit scores in the training process"),
    # trainer
    "defaults": no_effect("hydra's defaults list: rlkit starts from its own defaults (docs/verl.md says where they "
                          "differ from verl's)"),
    "trainer.total_training_steps": total_training_steps,
    "trainer.critic_warmup": critic_warmup,
    "trainer.save_freq": save_freq,
    "trainer.test_freq": test_freq,
    "trainer.logger": loggers,
    "trainer.default_local_dir": output_dir,
    "trainer.resume_mode": resume_mode,
    "trainer.resume_from_path": resume_from_path,
    "trainer.n_gpus_per_node": launcher,
    "trainer.nnodes": launcher,
    "trainer.device": device,
    "trainer.max_actor_ckpt_to_keep": rename("trainer.keep_last"),
    "trainer.max_critic_ckpt_to_keep": rename("trainer.keep_last"),
    "trainer.balance_batch": no_effect("rlkit splits each batch evenly over the ranks"),
    "trainer.log_val_generations": accepted(0, advice="rlkit does not log generations; remove the key"),
    "trainer.val_only": accepted(False, advice="use `rlkit generate CHECKPOINT --data FILE --reward NAME`"),
    "trainer.default_hdfs_dir": accepted(None, advice="rlkit writes to trainer.output_dir only; copy it yourself"),
    "trainer.del_local_ckpt_after_load": accepted(False, advice="rlkit never deletes checkpoints it loads"),
}
RULES = {key: interpolation_free(rule) for key, rule in RULES.items()}


# -- backends' own keys (from their registry entries) ------------------------------------------------
