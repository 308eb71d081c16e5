"""What each verl key means in rlkit: RULES, verl key -> rule. Renames, notes and accepted values are written here;
where a translation is more than a rename, its rule is in rlkit.config.verl.conversions, which says what verl
does."""

from __future__ import annotations

from rlkit.config.verl.conversions import (
    adv_estimator,
    clip_ratio,
    critic_warmup,
    custom_reward_name,
    custom_reward_path,
    device,
    dynamic_batch,
    free_cache_engine,
    global_micro_batch,
    launcher,
    loggers,
    lora_option,
    lora_rank,
    micro_batch,
    negative_means_unset,
    norm_adv_by_std,
    optimizer,
    output_dir,
    policy_loss,
    resume_from_path,
    resume_mode,
    reward_manager,
    reward_model_enable,
    rollout_name,
    same_as_actor,
    same_strategy,
    save_freq,
    scheduler,
    strategy,
    test_freq,
    token_budget,
    total_training_steps,
    warmup_ratio,
    warmup_steps,
)
from rlkit.config.verl.translation import (
    ACTOR,
    MODEL,
    REF,
    ROLLOUT,
    Rule,
    accepted,
    interpolation_free,
    no_effect,
    rename,
)

VERL_SECTIONS = ("actor_rollout_ref", "custom_reward_function", "reward_model", "reward_manager", "global_profiler",
                 "ray_kwargs", "transfer_queue", "hydra", "defaults")


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
    "data.train_max_samples": rename("data.max_train_samples", negative_means_unset),
    "data.val_max_samples": rename("data.max_val_samples", negative_means_unset),
    # model
    f"{MODEL}path": rename("model.path"),
    f"{MODEL}tokenizer_path": rename("model.tokenizer_path"),
    f"{MODEL}trust_remote_code": rename("model.trust_remote_code"),
    f"{MODEL}enable_gradient_checkpointing": rename("engine.gradient_checkpointing"),
    f"{MODEL}use_remove_padding": rename("engine.pack_sequences", note="verl's padding-free forward"),
    f"{MODEL}lora_rank": lora_rank,
    f"{MODEL}lora_alpha": lora_option("alpha"),
    f"{MODEL}target_modules": lora_option("target_modules"),
    f"{MODEL}use_shm": accepted(False, advice="rlkit loads models from disk; remove the key"),
    f"{MODEL}use_liger": accepted(False, advice="rlkit has no Liger kernels; remove the key"),
    f"{MODEL}use_fused_kernels": accepted(False, advice="rlkit has no fused kernels; try engine.torch_compile=true"),
    f"{MODEL}enable_activation_offload": accepted(False, advice="use engine.gradient_checkpointing=true instead"),
    f"{MODEL}external_lib": accepted(None, advice="import the library from a reward or engine plugin instead"),
    # actor
    **_optimizer_rules(f"{ACTOR}optim", "optim", shared=False),
    f"{ACTOR}grad_clip": rename("optim.grad_clip"),
    f"{ACTOR}ppo_mini_batch_size": rename("algorithm.mini_batch_size"),
    f"{ACTOR}ppo_micro_batch_size_per_gpu": micro_batch,
    f"{ACTOR}ppo_micro_batch_size": global_micro_batch,
    f"{ACTOR}ppo_epochs": rename("algorithm.ppo_epochs"),
    f"{ACTOR}use_dynamic_bsz": dynamic_batch,
    f"{ACTOR}ppo_max_token_len_per_gpu": token_budget,
    **{f"{ACTOR}{key}": rename(f"algorithm.{key}")
       for key in ("use_kl_loss", "kl_loss_coef", "kl_loss_type", "entropy_coeff", "loss_agg_mode", "clip_ratio_low",
                   "clip_ratio_high", "clip_ratio_c")},
    f"{ACTOR}clip_ratio": clip_ratio,
    f"{ACTOR}policy_loss.loss_mode": policy_loss,
    f"{ACTOR}strategy": strategy,
    f"{ACTOR}ulysses_sequence_parallel_size": accepted(1, advice="rlkit has no sequence parallelism; set 1"),
    f"{ACTOR}shuffle": accepted(False, advice="rlkit keeps the mini-batches in order; remove the key"),
    f"{ACTOR}use_torch_compile": no_effect("verl compiles its entropy function; rlkit's engine.torch_compile "
                                            "compiles the decoder layers too, so set that yourself"),
    # rollout
    f"{ROLLOUT}name": rollout_name,
    **{f"{ROLLOUT}{key}": rename(f"rollout.{key}") for key in ("n", "temperature", "top_p", "top_k", "ignore_eos")},
    f"{ROLLOUT}response_length": rename("rollout.max_new_tokens"),
    f"{ROLLOUT}prompt_length": rename("data.max_prompt_length"),
    f"{ROLLOUT}val_kwargs.temperature": rename("rollout.val_temperature"),
    f"{ROLLOUT}val_kwargs.n": rename("rollout.val_n"),
    f"{ROLLOUT}val_kwargs.do_sample": no_effect("sampling follows val_kwargs.temperature (0 is greedy)"),
    f"{ROLLOUT}do_sample": accepted(True, advice="set rollout.temperature=0 for greedy responses"),
    f"{ROLLOUT}log_prob_micro_batch_size_per_gpu": micro_batch,
    f"{ROLLOUT}log_prob_micro_batch_size": global_micro_batch,
    f"{ROLLOUT}mode": no_effect("rlkit generates in the training processes, one batch at a time"),
    f"{ROLLOUT}free_cache_engine": free_cache_engine,
    f"{ROLLOUT}multi_turn.enable": accepted(False, advice="set environment.name (tools, or your own environment) "
                                             "and rollout.max_turns instead (docs/environments.md)"),
    # reference
    f"{REF}log_prob_micro_batch_size_per_gpu": micro_batch,
    f"{REF}log_prob_micro_batch_size": global_micro_batch,
    f"{REF}strategy": same_strategy,
    f"{REF}ulysses_sequence_parallel_size": accepted(1, advice="rlkit has no sequence parallelism; set 1"),
    "actor_rollout_ref.hybrid_engine": accepted(True, advice="rlkit always colocates training and generation"),
    # critic
    "critic.model.path": rename("critic.model_path"),
    "critic.model.tokenizer_path": no_effect("the critic uses the policy's tokenizer"),
    "critic.ppo_micro_batch_size_per_gpu": micro_batch,
    "critic.forward_micro_batch_size_per_gpu": micro_batch,
    "critic.ppo_micro_batch_size": global_micro_batch,
    "critic.strategy": same_strategy,
    "critic.ppo_mini_batch_size": same_as_actor(f"{ACTOR}ppo_mini_batch_size", "algorithm.mini_batch_size"),
    "critic.ppo_epochs": same_as_actor(f"{ACTOR}ppo_epochs", "algorithm.ppo_epochs"),
    "critic.model.enable_gradient_checkpointing": same_as_actor(f"{MODEL}enable_gradient_checkpointing",
                                                                "engine.gradient_checkpointing"),
    "critic.model.use_remove_padding": same_as_actor(f"{MODEL}use_remove_padding", "engine.pack_sequences"),
    "critic.model.fsdp_config.param_offload": same_as_actor(f"{ACTOR}fsdp_config.param_offload",
                                                            "the engine block's offload options"),
    "critic.model.fsdp_config.optimizer_offload": same_as_actor(f"{ACTOR}fsdp_config.optimizer_offload",
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
