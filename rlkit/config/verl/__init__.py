"""verl's config keys, translated to rlkit's, so that a verl override list or a YAML in verl's layout runs as is.

`rlkit train` (and `config show`, `validate`, `config from-verl`) read verl's keys among rlkit's: each one is
translated to the rlkit key(s) with the same meaning, with one log line per key
(`verl key actor_rollout_ref.actor.optim.lr -> optim.lr`). A verl key rlkit cannot honour is an error that
names it and says what to do instead, never a silent drop. docs/verl.md is the table for users.

Which keys are verl's: every key under a section only verl has (`actor_rollout_ref`, `custom_reward_function`,
`reward_model`, ...), and the keys of RULES elsewhere (`data.max_response_length`, `trainer.logger`). A few
paths are rlkit's too and are translated only for a value that means something else in verl
(`trainer.save_freq=-1`, `algorithm.adv_estimator=grpo` with `norm_adv_by_std_in_grpo=False`).

Keys a backend reads (`...rollout.gpu_memory_utilization`) come from the backends' registry entries
(rlkit.registry.Backend.verl_options), which write them into the block of every backend that has the option,
so a translated recipe still swaps backends. Where the translation is not a plain rename, the rule below says
what verl does (read from verl's ppo_trainer.yaml and ray_trainer.py).

Precedence is rlkit's: the file, then the flags, then the overrides, each translated on its own; a rule that
depends on another key (lora_alpha on lora_rank) reads it from all of them.
"""

from rlkit.config.verl.translate import translate_layers

__all__ = ["translate_layers"]
