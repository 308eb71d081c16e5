"""The typed configuration of an RL run.

Every field is described once here; the CLI help and docs/config.md are rendered from these
descriptions. Configs are never mutated at run time: world size, token counts and the like are passed
as arguments. The defaults are the embedded default run (a tiny model built locally, a built-in task).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from rlkit.config.algorithm import (  # noqa: F401  re-exported: the sections of a run, in one place
    AlgorithmConfig,
    CriticConfig,
    DynamicSamplingConfig,
    KLControlConfig,
    OverlongPenaltyConfig,
    RewardConfig,
)
from rlkit.config.base import LocalPath, Section
from rlkit.config.engines import EngineConfig, OptimConfig  # noqa: F401
from rlkit.config.environment import EnvironmentConfig  # noqa: F401
from rlkit.config.placement import PlacementConfig  # noqa: F401
from rlkit.config.rollouts import RolloutConfig  # noqa: F401
from rlkit.errors import PluginError

BUILTIN_TINY = "builtin:tiny"


def _file_list(value: Any) -> Any:
    """verl writes one file as a plain string and no files as null; both mean a list here."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return value


FileList = Annotated[list[LocalPath], BeforeValidator(_file_list)]


def _estimator(name: str):
    """The advantage estimator registered as `name`, whose flags some rules below read. rlkit.algorithms sits
    below the config layer; it is imported when a config is validated, not when this module is imported,
    so that importing the config does not import torch."""
    from rlkit.algorithms.advantages import estimator_for

    return estimator_for(name)


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------
class LoraConfig(Section):
    rank: Annotated[int, Field(ge=1, description="LoRA rank r.")] = 8
    alpha: Annotated[float, Field(gt=0, description="LoRA alpha; the update is scaled by alpha / rank.")] = 16.0
    dropout: Annotated[float, Field(ge=0, lt=1, description="Dropout on the LoRA input.")] = 0.0
    target_modules: Annotated[
        list[str] | Literal["all-linear"],
        Field(description="Module names to adapt, or 'all-linear' for every linear layer but the LM head."),
    ] = "all-linear"
    modules_to_save: Annotated[
        list[str] | None,
        Field(description="Modules trained in full next to the adapters (peft's modules_to_save; the reference "
              "policy uses their original weights), e.g. [lm_head] for a model whose output layer is untrained. "
              "null: [lm_head] when model.path is builtin:tiny (its random, frozen LM head caps the loss LoRA can "
              "reach near 4.5; docs/sft.md), else none."),
    ] = None


class ModelConfig(Section):
    path: Annotated[
        LocalPath,
        Field(
            description="Hugging Face model directory or hub id (loaded offline from the local cache), or "
            "'builtin:tiny' for the tiny model rlkit builds locally."
        ),
    ] = "builtin:tiny"
    tokenizer_path: Annotated[
        LocalPath | None, Field(description="Tokenizer directory; defaults to model.path.")
    ] = None
    trust_remote_code: Annotated[bool, Field(description="Allow custom modelling code from the model folder.")] = False
    lora: Annotated[
        LoraConfig | None,
        Field(description="Train LoRA adapters instead of all weights; the reference is the base with adapters off."),
    ] = None

    @model_validator(mode="before")
    @classmethod
    def _lora_trains_the_tiny_models_head(cls, data: Any) -> Any:
        # The built-in tiny model is random: LoRA alone cannot move its output layer, so its head trains in full.
        # Resolved before validation: a built config is frozen.
        if not isinstance(data, dict) or data.get("lora") is None:
            return data
        lora = data["lora"]
        lora = lora.model_dump() if isinstance(lora, BaseModel) else dict(lora) if isinstance(lora, dict) else lora
        if isinstance(lora, dict) and lora.get("modules_to_save") is None:
            lora["modules_to_save"] = ["lm_head"] if data.get("path", BUILTIN_TINY) == BUILTIN_TINY else []
            data = {**data, "lora": lora}
        return data


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
class DataConfig(Section):
    train_files: Annotated[
        FileList,
        Field(description="Prompt files (.jsonl, .json, .parquet), or 'builtin:<task>' for a built-in task; one "
              "file may be given as a string."),
    ] = ["builtin:letters"]
    val_files: Annotated[
        FileList, Field(description="Validation prompt files (a list, or one as a string); empty or null for none.")
    ] = ["builtin:letters-val"]
    schema_: Annotated[
        Literal["auto", "flat", "verl"],
        Field(
            alias="schema",
            description="'flat': records with prompt_key/answer_key; 'verl': verl's parquet schema (prompt as "
            "chat messages, reward_model.ground_truth, data_source, extra_info); 'auto' picks per file.",
        ),
    ] = "auto"
    prompt_key: Annotated[str, Field(description="Key of the prompt (flat schema: text; verl schema: messages).")] = (
        "prompt"
    )
    answer_key: Annotated[str, Field(description="Key of the ground-truth answer (flat schema).")] = "answer"
    data_source: Annotated[
        str | None,
        Field(description="data_source for flat records without one; defaults to the file's stem."),
    ] = None
    prompt_format: Annotated[
        Literal["auto", "chat", "raw"],
        Field(description="'chat' applies the tokenizer's chat template, 'raw' uses the text as is, 'auto' chats "
              "when the tokenizer has a template."),
    ] = "auto"
    system_prompt: Annotated[str | None, Field(description="System message put before every chat prompt.")] = None
    max_prompt_length: Annotated[int, Field(ge=1, description="Longest prompt in tokens.")] = 512
    filter_overlong_prompts: Annotated[
        bool, Field(description="Drop prompts longer than max_prompt_length (else apply `truncation`).")
    ] = True
    truncation: Annotated[
        Literal["error", "left", "right"],
        Field(description="What to do with an overlong prompt when it is not filtered."),
    ] = "error"
    shuffle: Annotated[bool, Field(description="Shuffle the training prompts each epoch (seeded by trainer.seed).")] = (
        True
    )
    train_batch_size: Annotated[int, Field(ge=1, description="Prompts per training step.")] = 16
    val_batch_size: Annotated[
        int | None, Field(ge=1, description="Prompts per validation generate call; default: all at once.")
    ] = None
    max_train_samples: Annotated[int | None, Field(ge=1, description="Use only the first N training prompts.")] = None
    max_val_samples: Annotated[int | None, Field(ge=1, description="Use only the first N validation prompts.")] = None


# ---------------------------------------------------------------------------------------------
# trainer
# ---------------------------------------------------------------------------------------------
Logger = Literal["console", "jsonl", "tensorboard", "wandb"]
PreemptSignal = Literal["SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP"]


class TrainerConfig(Section):
    total_steps: Annotated[
        int | None,
        Field(ge=1, description="Training steps (the default unless total_epochs is set); null: total_epochs (or "
              "one epoch) of the data."),
    ] = 100
    total_epochs: Annotated[
        int | None,
        Field(ge=1, description="Epochs over the data instead of total_steps; setting both is an error."),
    ] = None
    output_dir: Annotated[LocalPath, Field(description="Checkpoints, metrics.jsonl, TensorBoard events.")] = (
        "outputs/default"
    )
    seed: Annotated[int, Field(description="Seed for data order, sampling and initialisation.")] = 1
    save_freq: Annotated[int, Field(ge=0, description="Checkpoint every N steps (0: only at the end).")] = 0
    keep_last: Annotated[int, Field(ge=1, description="Checkpoints to keep.")] = 2
    save_at_end: Annotated[bool, Field(description="Checkpoint after the last step.")] = True
    test_freq: Annotated[int, Field(ge=0, description="Validate every N steps (0: only at the end).")] = 25
    val_before_train: Annotated[bool, Field(description="Validate before the first step.")] = True
    resume: Annotated[
        LocalPath,
        Field(description="'auto': continue from the latest checkpoint in output_dir; 'disable'; or a path."),
    ] = "auto"
    force_resume: Annotated[
        bool,
        Field(description="Resume even when the config changed in a way the checkpoint does not fit (training "
              "data and order, seed, world size, LoRA); the changes are listed either way."),
    ] = False
    loggers: Annotated[list[Logger], Field(description="Where metrics go.")] = ["console", "jsonl", "tensorboard"]
    progress_bar: Annotated[bool, Field(description="Show a progress bar on the console.")] = True
    on_nonfinite: Annotated[
        Literal["skip", "stop"],
        Field(description="A non-finite loss or gradient norm: 'skip' the update with a warning (counted in "
              "update/skipped), or 'stop' the run."),
    ] = "skip"
    device: Annotated[Literal["auto", "cpu", "cuda"], Field(description="'auto': cuda when available.")] = "auto"
    preempt_signals: Annotated[
        list[PreemptSignal],
        Field(description="Signals that finish the current step, save a checkpoint and exit with code 75 (a "
              "cluster's notice before it kills the job); empty: they act as by default."),
    ] = ["SIGTERM", "SIGUSR1"]
    project_name: Annotated[str, Field(description="wandb project.")] = "rlkit"
    experiment_name: Annotated[str | None, Field(description="wandb run name; default: output_dir's name.")] = None

    @model_validator(mode="before")
    @classmethod
    def _epochs_replace_steps(cls, data: Any) -> Any:
        # Sees only what a config gave (rlkit.config.loading merges nothing but customised defaults), so the
        # default total_steps yields to a given total_epochs and two given lengths are an error.
        if not isinstance(data, dict) or data.get("total_epochs") is None:
            return data
        if data.get("total_steps") is not None:
            raise ValueError(
                f"trainer.total_steps={data['total_steps']} and trainer.total_epochs={data['total_epochs']} are both "
                "set; give one (the other null): steps, or epochs over the data"
            )
        return {**data, "total_steps": None}

    def num_steps(self, steps_per_epoch: int) -> int:
        """The run's length: total_steps, else total_epochs (default one) epochs of `steps_per_epoch`."""
        return self.total_steps or steps_per_epoch * (self.total_epochs or 1)


# ---------------------------------------------------------------------------------------------
# the whole run
# ---------------------------------------------------------------------------------------------
class RunConfig(Section):
    """An RL training run: `rlkit train`."""

    accepts_verl_keys: ClassVar[bool] = True  # verl's override keys and YAML layout are translated (rlkit/config/verl/)

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    engine: EngineConfig = EngineConfig()
    # The defaults of the embedded run: a tiny model learns fast with a large learning rate.
    optim: Annotated[OptimConfig, Field(description="Policy optimizer.")] = OptimConfig(lr=5e-3, grad_clip=1.0)
    rollout: RolloutConfig = RolloutConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig(mini_batch_size=8)
    critic: CriticConfig = CriticConfig()
    reward: RewardConfig = RewardConfig()
    environment: EnvironmentConfig = EnvironmentConfig()
    trainer: TrainerConfig = TrainerConfig()
    placement: PlacementConfig = PlacementConfig()

    @model_validator(mode="after")
    def _estimator_exists(self) -> RunConfig:
        try:
            _estimator(self.algorithm.adv_estimator)
        except PluginError as error:
            raise ValueError(f"algorithm.adv_estimator: {error}") from None
        return self

    @model_validator(mode="after")
    def _groups_need_several_samples(self) -> RunConfig:
        if _estimator(self.algorithm.adv_estimator).needs_groups and self.rollout.n < 2:
            raise ValueError(
                f"algorithm.adv_estimator={self.algorithm.adv_estimator} compares responses to the same prompt, "
                f"so rollout.n must be at least 2 (it is {self.rollout.n}); set rollout.n=8, say"
            )
        return self

    @model_validator(mode="after")
    def _dynamic_sampling_keeps_baselines(self) -> RunConfig:
        if self.algorithm.dynamic_sampling is not None and _estimator(self.algorithm.adv_estimator).needs_baselines:
            raise ValueError(
                f"algorithm.dynamic_sampling cannot be combined with algorithm.adv_estimator="
                f"{self.algorithm.adv_estimator}, whose greedy baselines belong to the first generation; "
                "remove algorithm.dynamic_sampling or choose grpo"
            )
        return self

    @model_validator(mode="after")
    def _critic_warmup_needs_a_critic(self) -> RunConfig:
        if self.critic.warmup_steps and not _estimator(self.algorithm.adv_estimator).needs_values:
            raise ValueError(
                f"critic.warmup_steps={self.critic.warmup_steps} trains only the critic for the first steps, but "
                f"algorithm.adv_estimator={self.algorithm.adv_estimator} uses no critic, so those steps would train "
                "nothing; set critic.warmup_steps=0 (or use adv_estimator=gae)"
            )
        return self

    @model_validator(mode="after")
    def _kl_in_one_place(self) -> RunConfig:
        if self.algorithm.use_kl_in_reward and self.algorithm.use_kl_loss:
            raise ValueError(
                "algorithm.use_kl_in_reward and algorithm.use_kl_loss are both true: apply KL either in the reward "
                "or as a loss, not both; set one of them to false"
            )
        return self

    @model_validator(mode="after")
    def _old_logprob_pass_skipped_only_on_policy(self) -> RunConfig:
        # Either switch stands in for the policy before the update, which only the first of several optimizer
        # steps on a batch sees: later mini-batches and epochs need the pass.
        algorithm = self.algorithm
        on_policy = algorithm.ppo_epochs == 1 and algorithm.mini_batch_size == self.data.train_batch_size
        for name in ("reuse_rollout_logprobs", "old_logprobs_from_update"):
            if getattr(algorithm, name) is True and not on_policy:  # 'auto' turns it on only where allowed
                raise ValueError(
                    f"algorithm.{name} needs an on-policy update: set algorithm.ppo_epochs=1 and "
                    f"algorithm.mini_batch_size={self.data.train_batch_size} (= data.train_batch_size), or turn "
                    "it off"
                )
        return self

    @model_validator(mode="after")
    def _old_logprobs_from_update_needs_nothing_before_it(self) -> RunConfig:
        algorithm = self.algorithm
        if algorithm.old_logprobs_from_update is not True:  # 'auto' turns it on only where allowed
            return self
        flag = "algorithm.old_logprobs_from_update"
        if algorithm.reuse_rollout_logprobs:
            raise ValueError(f"{flag} and algorithm.reuse_rollout_logprobs both replace the old log-prob pass; "
                             "pick one and set the other to false")
        if algorithm.use_kl_in_reward:
            raise ValueError(f"{flag} cannot be combined with algorithm.use_kl_in_reward, which needs the old "
                             "log-probs before the update to build the rewards and advantages; set "
                             f"{flag}=false, or put the KL in the loss (algorithm.use_kl_loss=true) instead")
        if algorithm.rollout_is_cap is not None:
            raise ValueError(f"{flag} cannot be combined with algorithm.rollout_is_cap, whose weights compare the "
                             f"old log-probs with the rollout's; set {flag}=false or algorithm.rollout_is_cap=null")
        return self

    @model_validator(mode="after")
    def _batch_sizes_divide(self) -> RunConfig:
        batch, mini = self.data.train_batch_size, self.algorithm.mini_batch_size
        if batch % mini:
            raise ValueError(
                f"data.train_batch_size={batch} is not a multiple of algorithm.mini_batch_size={mini}; "
                f"choose a mini_batch_size that divides {batch}"
            )
        return self

    @model_validator(mode="after")
    def _stale_responses_are_handled(self) -> RunConfig:
        placement, algorithm = self.placement, self.algorithm
        if placement.on_stale == "reweight" and algorithm.rollout_is_cap is None:
            raise ValueError(
                "placement.on_stale=reweight keeps stale responses and relies on the truncated importance weight: "
                "set algorithm.rollout_is_cap (2.0, say), or placement.on_stale=drop"
            )
        if placement.staleness and algorithm.reuse_rollout_logprobs:
            raise ValueError(
                f"algorithm.reuse_rollout_logprobs takes the rollout's log-probs as the policy before the update, "
                f"but with placement.staleness={placement.staleness} the rollout ran up to {placement.staleness} "
                "versions behind it; set algorithm.reuse_rollout_logprobs=false"
            )
        return self
