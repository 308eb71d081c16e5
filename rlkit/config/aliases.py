"""Renamed concepts: a key as other libraries (verl, TRL, OpenRLHF) or older rlkit spell it -> rlkit's key(s).

Consulted for the "did you mean" of an unknown key before string distance, which pairs names by spelling,
not meaning (it offered data.max_prompt_length for data.max_response_length). A suggestion is made only
when its target is a key of the config at hand (an SFT run has no rollout). verl's own keys are translated
outright where rlkit can honour them (rlkit.config.verl); this table covers the rest.
"""

from __future__ import annotations

ALIASES: dict[str, tuple[str, ...]] = {
    # data
    "data.max_response_length": ("rollout.max_new_tokens",),
    "data.max_length": ("data.max_prompt_length",),
    "data.batch_size": ("data.train_batch_size",),
    "data.rollout_batch_size": ("data.train_batch_size",),
    "data.train_max_samples": ("data.max_train_samples",),
    "data.val_max_samples": ("data.max_val_samples",),
    "data.train_file": ("data.train_files",),
    "data.val_file": ("data.val_files",),
    "data.test_files": ("data.val_files",),
    # model
    "model.name_or_path": ("model.path",),
    "model.model_name_or_path": ("model.path",),
    "model.pretrain": ("model.path",),
    "model.lora_rank": ("model.lora.rank",),
    "model.lora_alpha": ("model.lora.alpha",),
    "model.target_modules": ("model.lora.target_modules",),
    "model.enable_gradient_checkpointing": ("engine.gradient_checkpointing",),
    "model.use_remove_padding": ("engine.pack_sequences",),
    # engine
    "engine.strategy": ("engine.name",),
    "engine.backend": ("engine.name",),
    "engine.enable_gradient_checkpointing": ("engine.gradient_checkpointing",),
    "engine.use_remove_padding": ("engine.pack_sequences",),
    "engine.dtype": ("engine.precision",),
    "engine.use_torch_compile": ("engine.torch_compile",),
    "engine.ppo_max_token_len_per_gpu": ("engine.max_tokens_per_micro_batch",),
    # optimizer
    "optim.learning_rate": ("optim.lr",),
    "optim.lr_warmup_steps": ("optim.warmup_steps",),
    "optim.num_warmup_steps": ("optim.warmup_steps",),
    "optim.lr_warmup_steps_ratio": ("optim.warmup_ratio",),
    "optim.lr_scheduler_type": ("optim.scheduler",),
    "optim.warmup_style": ("optim.scheduler",),
    "optim.clip_grad": ("optim.grad_clip",),
    "optim.max_grad_norm": ("optim.grad_clip",),
    "optim.adam_betas": ("optim.betas",),
    # rollout
    "rollout.max_tokens": ("rollout.max_new_tokens",),
    "rollout.max_length": ("rollout.max_new_tokens",),
    "rollout.response_length": ("rollout.max_new_tokens",),
    "rollout.max_response_length": ("rollout.max_new_tokens",),
    "rollout.max_completion_length": ("rollout.max_new_tokens",),
    "rollout.num_samples": ("rollout.n",),
    "rollout.num_generations": ("rollout.n",),
    "rollout.n_samples_per_prompt": ("rollout.n",),
    "rollout.num_return_sequences": ("rollout.n",),
    # algorithm
    "algorithm.ppo_mini_batch_size": ("algorithm.mini_batch_size",),
    "algorithm.ppo_micro_batch_size_per_gpu": ("algorithm.micro_batch_size_per_device",),
    "algorithm.micro_batch_size": ("algorithm.micro_batch_size_per_device",),
    "algorithm.micro_batch_size_per_gpu": ("algorithm.micro_batch_size_per_device",),
    "algorithm.clip_ratio": ("algorithm.clip_ratio_low", "algorithm.clip_ratio_high"),
    "algorithm.cliprange": ("algorithm.clip_ratio_low", "algorithm.clip_ratio_high"),
    "algorithm.epsilon": ("algorithm.clip_ratio_low", "algorithm.clip_ratio_high"),
    "algorithm.epsilon_high": ("algorithm.clip_ratio_high",),
    "algorithm.beta": ("algorithm.kl_loss_coef",),
    "algorithm.kl_coef": ("algorithm.kl_loss_coef", "algorithm.kl_ctrl.kl_coef"),
    "algorithm.init_kl_coef": ("algorithm.kl_ctrl.kl_coef",),
    "algorithm.entropy_coef": ("algorithm.entropy_coeff",),
    "algorithm.num_iterations": ("algorithm.ppo_epochs",),
    "algorithm.estimator": ("algorithm.adv_estimator",),
    "algorithm.advantage_estimator": ("algorithm.adv_estimator",),
    "algorithm.loss_type": ("algorithm.loss_agg_mode",),
    # critic
    "critic.model": ("critic.model_path",),
    "critic.critic_warmup": ("critic.warmup_steps",),
    "critic.value_clip": ("critic.cliprange_value",),
    # reward
    "reward.reward_manager": ("reward.name",),
    "reward.function": ("reward.name",),
    "reward.reward_kwargs": ("reward.kwargs",),
    # trainer
    "trainer.total_training_steps": ("trainer.total_steps",),
    "trainer.max_steps": ("trainer.total_steps",),
    "trainer.num_train_epochs": ("trainer.total_epochs",),
    "trainer.epochs": ("trainer.total_epochs",),
    "trainer.logger": ("trainer.loggers",),
    "trainer.report_to": ("trainer.loggers",),
    "trainer.default_local_dir": ("trainer.output_dir",),
    "trainer.save_dir": ("trainer.output_dir",),
    "trainer.resume_mode": ("trainer.resume",),
    "trainer.resume_from_path": ("trainer.resume",),
    "trainer.critic_warmup": ("critic.warmup_steps",),
    "trainer.max_actor_ckpt_to_keep": ("trainer.keep_last",),
    "trainer.eval_steps": ("trainer.test_freq",),
    "trainer.save_steps": ("trainer.save_freq",),
}
