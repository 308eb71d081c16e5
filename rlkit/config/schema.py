"""The typed configuration of an RL run.

Every field is described once here; the CLI help and docs/config.md are rendered from these
descriptions. Configs are never mutated at run time: world size, token counts and the like are passed
as arguments. The defaults are the embedded default run (a tiny model built locally, a built-in task).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from rlkit.errors import PluginError


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


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


class ModelConfig(Section):
    path: Annotated[
        str,
        Field(
            description="Hugging Face model directory or hub id (loaded offline from the local cache), or "
            "'builtin:tiny' for the tiny model rlkit builds locally."
        ),
    ] = "builtin:tiny"
    tokenizer_path: Annotated[str | None, Field(description="Tokenizer directory; defaults to model.path.")] = None
    trust_remote_code: Annotated[bool, Field(description="Allow custom modelling code from the model folder.")] = False
    lora: Annotated[
        LoraConfig | None,
        Field(description="Train LoRA adapters instead of all weights; the reference is the base with adapters off."),
    ] = None


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
class DataConfig(Section):
    train_files: Annotated[
        list[str],
        Field(description="Prompt files (.jsonl, .json, .parquet), or 'builtin:<task>' for a built-in task."),
    ] = ["builtin:letters"]
    val_files: Annotated[list[str], Field(description="Validation prompt files; empty for none.")] = [
        "builtin:letters-val"
    ]
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
# training engines
# ---------------------------------------------------------------------------------------------
Precision = Literal["auto", "fp32", "bf16"]


class EngineCommon(Section):
    precision: Annotated[
        Precision, Field(description="Compute precision: 'auto' is bf16 on GPU and fp32 on CPU.")
    ] = "auto"
    gradient_checkpointing: Annotated[bool, Field(description="Recompute activations in backward.")] = False
    logprob_chunk_size: Annotated[
        int,
        Field(ge=1, description="Tokens per chunk when computing log-probs and entropy, so that fp32 logits of the "
              "whole batch times the vocabulary never exist at once."),
    ] = 2048
    remove_padding: Annotated[
        bool,
        Field(description="Trim each micro-batch to the columns its rows use (leading prompt padding, trailing "
              "response padding) before the forward; outputs are padded back to the batch's width. Same numbers "
              "up to float rounding; no varlen packing."),
    ] = False
    max_tokens_per_micro_batch: Annotated[
        int | None,
        Field(ge=1, description="Form micro-batches by a token budget instead of "
              "algorithm.micro_batch_size_per_device: rows x padded width (the trimmed width with remove_padding) "
              "stays within it. Sequences are grouped by length; every rank runs the same number of micro-batches; "
              "a sequence over the budget runs alone."),
    ] = None


class FSDP2Config(EngineCommon):
    name: Annotated[Literal["fsdp2"], Field(description="Selects this training engine (--engine fsdp2).")] = "fsdp2"
    reshard_after_forward: Annotated[bool, Field(description="Free gathered weights after forward (ZeRO-3 like).")] = True
    cpu_offload: Annotated[bool, Field(description="Keep parameters, gradients and optimizer state on CPU.")] = False
    offload_ref: Annotated[bool, Field(description="Keep the reference model on CPU between its passes.")] = False


class DeepSpeedConfig(EngineCommon):
    name: Annotated[Literal["deepspeed"], Field(description="Selects this training engine (--engine deepspeed).")] = "deepspeed"
    zero_stage: Annotated[Literal[1, 2, 3], Field(description="ZeRO stage.")] = 3
    offload_optimizer: Annotated[bool, Field(description="Optimizer state on CPU (ZeRO-Offload).")] = False
    offload_param: Annotated[bool, Field(description="Parameters on CPU (ZeRO-3 only).")] = False
    optimizer_impl: Annotated[
        Literal["torch", "deepspeed"],
        Field(description="'torch': torch AdamW (nothing compiles); 'deepspeed': FusedAdam on GPU, CPUAdam on CPU."),
    ] = "torch"
    offload_ref: Annotated[bool, Field(description="Reference model parameters on CPU (ZeRO-3 inference).")] = False


def _check_registered(registry_name: str, name: str) -> str:
    """A plugin's name must be registered (entry point) or a reference the registry can import later."""
    from rlkit import registry
    from rlkit.registry import is_reference

    known = getattr(registry, registry_name)
    if name not in known and not is_reference(name):
        raise ValueError(known._unknown_message(name))
    return name


class PluginEngineConfig(EngineCommon):
    """A training engine from a plugin: its options are validated by the plugin."""

    name: Annotated[str, Field(description="Registered engine name or 'module:attr' reference.")]
    options: Annotated[dict[str, Any], Field(description="Options passed to the plugin engine.")] = {}

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        return _check_registered("TRAIN_ENGINES", name)


def _engine_tag(value: Any) -> str:
    name = value.get("name", "fsdp2") if isinstance(value, dict) else getattr(value, "name", "fsdp2")
    return name if name in ("fsdp2", "deepspeed") else "plugin"


EngineConfig = Annotated[
    Union[
        Annotated[FSDP2Config, Tag("fsdp2")],
        Annotated[DeepSpeedConfig, Tag("deepspeed")],
        Annotated[PluginEngineConfig, Tag("plugin")],
    ],
    Discriminator(_engine_tag),
]


class OptimConfig(Section):
    lr: Annotated[float, Field(gt=0, description="Peak learning rate.")] = 1e-6
    weight_decay: Annotated[float, Field(ge=0, description="AdamW weight decay.")] = 0.01
    betas: Annotated[tuple[float, float], Field(description="AdamW betas.")] = (0.9, 0.999)
    eps: Annotated[float, Field(gt=0, description="AdamW epsilon.")] = 1e-8
    warmup_steps: Annotated[int, Field(ge=0, description="Linear warm-up steps (optimizer steps).")] = 0
    warmup_ratio: Annotated[
        float | None, Field(ge=0, le=1, description="Warm-up as a fraction of all steps; overrides warmup_steps.")
    ] = None
    scheduler: Annotated[Literal["constant", "cosine"], Field(description="Decay after warm-up.")] = "constant"
    min_lr_ratio: Annotated[float, Field(ge=0, le=1, description="Cosine decays to lr * min_lr_ratio.")] = 0.0
    grad_clip: Annotated[float | None, Field(gt=0, description="Clip the global gradient norm; null: no clipping.")] = (
        1.0
    )


# ---------------------------------------------------------------------------------------------
# rollout engines
# ---------------------------------------------------------------------------------------------
class RolloutCommon(Section):
    n: Annotated[int, Field(ge=1, description="Responses sampled per prompt.")] = 8
    temperature: Annotated[float, Field(ge=0, description="Sampling temperature; 0 is greedy.")] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1, description="Nucleus sampling mass.")] = 1.0
    top_k: Annotated[int, Field(ge=-1, description="Keep the k most likely tokens; -1 or 0 keeps all.")] = -1
    max_new_tokens: Annotated[int, Field(ge=1, description="Longest response in tokens.")] = 16
    stop_token_ids: Annotated[list[int], Field(description="Extra token ids that end a response (EOS always does).")] = []
    ignore_eos: Annotated[bool, Field(description="Keep generating past EOS (benchmarks: fixed lengths).")] = False
    return_logprobs: Annotated[
        bool,
        Field(description="Return the rollout's per-token log-probs (the rollout/logprob_abs_diff metric, "
              "reuse_rollout_logprobs, rollout_is_cap). vLLM generates about 2x slower with them: turn off for "
              "speed when none of those is used."),
    ] = True
    val_temperature: Annotated[float, Field(ge=0, description="Temperature for validation; 0 is greedy.")] = 0.0
    val_n: Annotated[int, Field(ge=1, description="Responses per validation prompt.")] = 1


class HFRolloutConfig(RolloutCommon):
    name: Annotated[Literal["hf"], Field(description="Selects this rollout engine (--rollout hf).")] = "hf"
    batch_size: Annotated[
        int | None, Field(ge=1, description="Prompts per generate call (memory knob); default: all at once.")
    ] = None


class VLLMRolloutConfig(RolloutCommon):
    name: Annotated[Literal["vllm"], Field(description="Selects this rollout engine (--rollout vllm).")] = "vllm"
    tensor_parallel_size: Annotated[int, Field(ge=1, description="GPUs per vLLM engine.")] = 1
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1, description="Fraction of GPU memory vLLM may use.")] = (
        0.5
    )
    enforce_eager: Annotated[bool, Field(description="Disable CUDA graphs (faster start, slower decode).")] = False
    enable_prefix_caching: Annotated[bool, Field(description="Reuse KV cache across shared prompt prefixes.")] = True
    max_model_len: Annotated[int | None, Field(ge=1, description="Context length; default: the model's.")] = None
    sleep_level: Annotated[
        Literal[0, 1, 2],
        Field(description="0: stay awake; 1: free the KV cache while training; 2: free weights too."),
    ] = 1
    seed: Annotated[int | None, Field(description="vLLM sampling seed; default: trainer.seed + rank.")] = None


class SGLangRolloutConfig(RolloutCommon):
    name: Annotated[Literal["sglang"], Field(description="Selects this rollout engine (--rollout sglang).")] = "sglang"
    tensor_parallel_size: Annotated[int, Field(ge=1, description="GPUs per SGLang engine.")] = 1
    mem_fraction_static: Annotated[float, Field(gt=0, le=1, description="Fraction of GPU memory for weights+KV.")] = 0.5
    attention_backend: Annotated[str, Field(description="SGLang attention backend.")] = "triton"
    sampling_backend: Annotated[str, Field(description="SGLang sampling backend.")] = "pytorch"
    disable_cuda_graph: Annotated[bool, Field(description="Disable CUDA graphs.")] = False
    release_memory: Annotated[bool, Field(description="Release weights and KV cache while training.")] = True


class PluginRolloutConfig(RolloutCommon):
    name: Annotated[str, Field(description="Registered rollout name or 'module:attr' reference.")]
    options: Annotated[dict[str, Any], Field(description="Options passed to the plugin rollout engine.")] = {}

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        return _check_registered("ROLLOUT_ENGINES", name)


def _rollout_tag(value: Any) -> str:
    name = value.get("name", "hf") if isinstance(value, dict) else getattr(value, "name", "hf")
    return name if name in ("hf", "vllm", "sglang") else "plugin"


RolloutConfig = Annotated[
    Union[
        Annotated[HFRolloutConfig, Tag("hf")],
        Annotated[VLLMRolloutConfig, Tag("vllm")],
        Annotated[SGLangRolloutConfig, Tag("sglang")],
        Annotated[PluginRolloutConfig, Tag("plugin")],
    ],
    Discriminator(_rollout_tag),
]


# ---------------------------------------------------------------------------------------------
# algorithm
# ---------------------------------------------------------------------------------------------
class KLControlConfig(Section):
    type: Annotated[Literal["fixed", "adaptive"], Field(description="Fixed or adaptive (Ziegler et al. 2019).")] = (
        "fixed"
    )
    kl_coef: Annotated[float, Field(ge=0, description="(Initial) KL coefficient in the reward.")] = 0.001
    target_kl: Annotated[float, Field(gt=0, description="Adaptive: the KL the controller steers to.")] = 0.1
    horizon: Annotated[int, Field(ge=1, description="Adaptive: the controller's horizon in samples.")] = 10000


class DynamicSamplingConfig(Section):
    max_generate_batches: Annotated[
        int, Field(ge=1, description="Generate at most this many batches to refill groups dropped for equal rewards.")
    ] = 4


class OverlongPenaltyConfig(Section):
    buffer_length: Annotated[int, Field(ge=1, description="Tokens before max_new_tokens where the penalty ramps.")] = 4
    penalty_factor: Annotated[float, Field(ge=0, description="Penalty at max_new_tokens.")] = 1.0


class AlgorithmConfig(Section):
    adv_estimator: Annotated[
        str,
        Field(description="Advantage estimator: gae, grpo, drgrpo, reinforce, reinforce_plus_plus, "
              "reinforce_plus_plus_baseline, rloo, remax, or a plugin's name."),
    ] = "grpo"
    policy_loss: Annotated[str, Field(description="Policy loss: ppo (clip), gspo, cispo, or a plugin's name.")] = "ppo"
    gamma: Annotated[float, Field(ge=0, le=1, description="Discount factor.")] = 1.0
    lam: Annotated[float, Field(ge=0, le=1, description="GAE lambda.")] = 1.0
    clip_ratio_low: Annotated[float, Field(ge=0, description="PPO clip below 1.")] = 0.2
    clip_ratio_high: Annotated[float, Field(ge=0, description="PPO clip above 1 (raise it for DAPO's clip-higher).")] = (
        0.2
    )
    clip_ratio_c: Annotated[float, Field(gt=1, description="Dual-clip bound for negative advantages.")] = 3.0
    loss_agg_mode: Annotated[
        Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"] | None,
        Field(description="How token losses become one number; default: the estimator's (token-mean; drgrpo "
              "seq-mean-token-sum-norm)."),
    ] = None
    loss_agg_norm_length: Annotated[
        int | None, Field(ge=1, description="The constant T of seq-mean-token-sum-norm; default: max_new_tokens.")
    ] = None
    entropy_coeff: Annotated[float, Field(ge=0, description="Entropy bonus coefficient.")] = 0.0
    use_kl_in_reward: Annotated[bool, Field(description="Subtract a KL penalty from the token rewards.")] = False
    kl_penalty: Annotated[
        Literal["k1", "kl", "k2", "mse", "k3", "low_var_kl", "abs"], Field(description="KL estimator in the reward.")
    ] = "k1"
    kl_ctrl: Annotated[KLControlConfig, Field(description="KL-in-reward coefficient control.")] = KLControlConfig()
    use_kl_loss: Annotated[bool, Field(description="Add a KL term to the policy loss (GRPO style).")] = False
    kl_loss_coef: Annotated[float, Field(ge=0, description="Weight of the KL loss.")] = 0.001
    kl_loss_type: Annotated[
        Literal["k1", "kl", "k2", "mse", "k3", "low_var_kl", "abs"], Field(description="KL estimator in the loss.")
    ] = "low_var_kl"
    ppo_epochs: Annotated[int, Field(ge=1, description="Passes over each batch.")] = 1
    mini_batch_size: Annotated[
        int, Field(ge=1, description="Prompts per optimizer step (times rollout.n responses).")
    ] = 16
    micro_batch_size_per_device: Annotated[
        int, Field(ge=1, description="Sequences per forward/backward on one device (memory knob).")
    ] = 16
    dynamic_sampling: Annotated[
        DynamicSamplingConfig | None,
        Field(description="DAPO dynamic sampling: drop groups whose rewards are all equal, then refill."),
    ] = None
    overlong_penalty: Annotated[
        OverlongPenaltyConfig | None, Field(description="DAPO soft overlong punishment added to the reward.")
    ] = None
    reuse_rollout_logprobs: Annotated[
        bool,
        Field(description="Use the rollout engine's log-probs as the old log-probs and skip that pass; only for "
              "on-policy updates (ppo_epochs 1, mini_batch_size == data.train_batch_size)."),
    ] = False
    rollout_is_cap: Annotated[
        float | None,
        Field(gt=0, description="Truncated importance sampling: weight the loss by min(p_train/p_rollout, cap)."),
    ] = None


class CriticConfig(Section):
    model_path: Annotated[
        str | None, Field(description="Critic model directory; default: a copy of the policy with a value head.")
    ] = None
    optim: Annotated[OptimConfig, Field(description="Critic optimizer.")] = OptimConfig(lr=1e-5)
    cliprange_value: Annotated[float, Field(gt=0, description="Value clipping around the old values.")] = 0.5
    warmup_steps: Annotated[int, Field(ge=0, description="Train only the critic for the first N steps.")] = 0


class RewardConfig(Section):
    name: Annotated[
        str,
        Field(description="Reward for every sample: a registered name, 'module:attr' or 'file.py:attr' "
              "(a function or a RewardManager class); 'auto' picks the built-in for each data_source."),
    ] = "auto"
    per_data_source: Annotated[
        dict[str, str], Field(description="Reward by data_source, overriding `name` for those sources.")
    ] = {}
    kwargs: Annotated[dict[str, Any], Field(description="Keyword arguments for the reward (or its manager).")] = {}
    timeout_s: Annotated[float | None, Field(gt=0, description="Fail a reward call that takes longer.")] = None
    on_error: Annotated[
        Literal["raise", "zero"],
        Field(description="'raise' stops on a failing reward; 'zero' scores it 0 and counts a warning."),
    ] = "raise"


# ---------------------------------------------------------------------------------------------
# trainer
# ---------------------------------------------------------------------------------------------
Logger = Literal["console", "jsonl", "tensorboard", "wandb"]


class TrainerConfig(Section):
    total_steps: Annotated[int | None, Field(ge=1, description="Training steps; null: total_epochs of data.")] = 100
    total_epochs: Annotated[int, Field(ge=1, description="Epochs over the prompts when total_steps is null.")] = 1
    output_dir: Annotated[str, Field(description="Checkpoints, metrics.jsonl, TensorBoard events.")] = "outputs/default"
    seed: Annotated[int, Field(description="Seed for data order, sampling and initialisation.")] = 1
    save_freq: Annotated[int, Field(ge=0, description="Checkpoint every N steps (0: only at the end).")] = 0
    keep_last: Annotated[int, Field(ge=1, description="Checkpoints to keep.")] = 2
    save_at_end: Annotated[bool, Field(description="Checkpoint after the last step.")] = True
    test_freq: Annotated[int, Field(ge=0, description="Validate every N steps (0: only at the end).")] = 25
    val_before_train: Annotated[bool, Field(description="Validate before the first step.")] = True
    resume: Annotated[
        str, Field(description="'auto': continue from the latest checkpoint in output_dir; 'disable'; or a path.")
    ] = "auto"
    loggers: Annotated[list[Logger], Field(description="Where metrics go.")] = ["console", "jsonl", "tensorboard"]
    progress_bar: Annotated[bool, Field(description="Show a progress bar on the console.")] = True
    on_nonfinite: Annotated[
        Literal["skip", "stop"],
        Field(description="A non-finite loss or gradient norm: 'skip' the update with a warning (counted in "
              "update/skipped), or 'stop' the run."),
    ] = "skip"
    device: Annotated[Literal["auto", "cpu", "cuda"], Field(description="'auto': cuda when available.")] = "auto"
    project_name: Annotated[str, Field(description="wandb project.")] = "rlkit"
    experiment_name: Annotated[str | None, Field(description="wandb run name; default: output_dir's name.")] = None


# ---------------------------------------------------------------------------------------------
# the whole run
# ---------------------------------------------------------------------------------------------
class RunConfig(Section):
    """An RL training run: `rlkit train`."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    engine: EngineConfig = FSDP2Config()
    # The defaults of the embedded run: a tiny model learns fast with a large learning rate.
    optim: Annotated[OptimConfig, Field(description="Policy optimizer.")] = OptimConfig(lr=5e-3, grad_clip=1.0)
    rollout: RolloutConfig = HFRolloutConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig(mini_batch_size=8)
    critic: CriticConfig = CriticConfig()
    reward: RewardConfig = RewardConfig()
    trainer: TrainerConfig = TrainerConfig()

    @model_validator(mode="after")
    def _estimator_exists(self) -> RunConfig:
        from rlkit.algorithms.advantages import estimator_for  # imported lazily: plugins may be code

        try:
            estimator_for(self.algorithm.adv_estimator)
        except PluginError as error:
            raise ValueError(f"algorithm.adv_estimator: {error}") from None
        return self

    @model_validator(mode="after")
    def _groups_need_several_samples(self) -> RunConfig:
        from rlkit.algorithms.advantages import estimator_for

        if estimator_for(self.algorithm.adv_estimator).needs_groups and self.rollout.n < 2:
            raise ValueError(
                f"algorithm.adv_estimator={self.algorithm.adv_estimator} compares responses to the same prompt, "
                f"so rollout.n must be at least 2 (it is {self.rollout.n}); set rollout.n=8, say"
            )
        return self

    @model_validator(mode="after")
    def _dynamic_sampling_keeps_baselines(self) -> RunConfig:
        from rlkit.algorithms.advantages import estimator_for

        if self.algorithm.dynamic_sampling is not None and estimator_for(self.algorithm.adv_estimator).needs_baselines:
            raise ValueError(
                f"algorithm.dynamic_sampling cannot be combined with algorithm.adv_estimator="
                f"{self.algorithm.adv_estimator}, whose greedy baselines belong to the first generation; "
                "remove algorithm.dynamic_sampling or choose grpo"
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
    def _reuse_logprobs_only_on_policy(self) -> RunConfig:
        algorithm = self.algorithm
        if algorithm.reuse_rollout_logprobs and (
            algorithm.ppo_epochs != 1 or algorithm.mini_batch_size != self.data.train_batch_size
        ):
            raise ValueError(
                "algorithm.reuse_rollout_logprobs needs an on-policy update: set algorithm.ppo_epochs=1 and "
                f"algorithm.mini_batch_size={self.data.train_batch_size} (= data.train_batch_size), or turn it off"
            )
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
