"""Turn a RunConfig into the objects a run needs. The registries are the only place a name becomes an object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlkit.algorithms.advantages import estimator_for
from rlkit.algorithms.policy_losses import loss_agg_mode_for
from rlkit.config.schema import BUILTIN_TINY, RunConfig
from rlkit.data import PromptDataset, load_prompt_dataset
from rlkit.distributed import DistInfo, barrier, process_rank
from rlkit.engines.base import EngineSpec, TrainEngine
from rlkit.environments import ChatRenderer, EnvironmentFactory, environment_factory, needs_chat_prompts
from rlkit.errors import ConfigError
from rlkit.experience import ColocatedExperience, ExperienceSource, MultiTurnGeneration
from rlkit.models.loading import check_model_path, load_tokenizer, local_folder
from rlkit.models.tiny import ensure_tiny_model
from rlkit.registry import ROLLOUT_ENGINES, TRAIN_ENGINES
from rlkit.rewards.base import RewardManager
from rlkit.rewards.loading import build_reward_manager, check_data_sources
from rlkit.rollout.base import RolloutEngine
from rlkit.timing import PhaseTimer
from rlkit.trainer.speed import ROLLOUT_LOGPROBS, SpeedPlan, plan_speed


def resolve_model_path(path: str, output_dir: Path, key: str = "model.path") -> str:
    """A local model folder: 'builtin:tiny' is built once under the output directory; a hub id is its snapshot
    in the local Hugging Face cache (never downloaded); a folder is itself. `key` names the path in errors."""
    if path == BUILTIN_TINY:
        # Rank 0 builds, the others wait: ranks racing to build one folder on a shared disk trip over each other.
        if process_rank() == 0:
            ensure_tiny_model(output_dir / "builtin_tiny")
        barrier()
        return str(ensure_tiny_model(output_dir / "builtin_tiny"))
    return local_folder(path, key)


@dataclass
class Components:
    tokenizer: Any
    model_path: str
    actor: TrainEngine
    ref: TrainEngine | None  # None when no KL is used, or with LoRA (the actor with adapters off)
    critic: TrainEngine | None
    rollout: RolloutEngine
    reward: RewardManager
    train_data: PromptDataset
    val_data: PromptDataset | None
    total_steps: int
    new_environment: EnvironmentFactory  # one environment per conversation (environment.name)
    speed: SpeedPlan  # resolve_static's: the budget and checkpointing may still be pending (settle_memory)


def uses_reference(cfg: RunConfig) -> bool:
    return cfg.algorithm.use_kl_in_reward or cfg.algorithm.use_kl_loss


def optimizer_steps_per_training_step(cfg: RunConfig) -> int:
    return cfg.algorithm.ppo_epochs * (cfg.data.train_batch_size // cfg.algorithm.mini_batch_size)


def check_against_world(cfg: RunConfig, dist: DistInfo) -> None:
    """Batch-size rules that depend on the number of ranks (runtime values, never written into the config)."""
    world = dist.world_size
    if cfg.data.train_batch_size % world:
        raise ConfigError(
            f"data.train_batch_size={cfg.data.train_batch_size} does not split over {world} ranks; "
            f"make it a multiple of {world}"
        )
    if cfg.algorithm.mini_batch_size % world:
        raise ConfigError(
            f"algorithm.mini_batch_size={cfg.algorithm.mini_batch_size} does not split over {world} ranks; "
            f"make it a multiple of {world}"
        )
    tp = getattr(cfg.rollout.options, "tensor_parallel_size", 1)
    if tp > 1:
        raise ConfigError(
            f"rollout.{cfg.rollout.name}.tensor_parallel_size={tp}: the trainer runs one rollout engine per rank for "
            "now; set it to 1"
        )


def build_engine(cfg: RunConfig, spec: EngineSpec, dist: DistInfo, speed: SpeedPlan | None = None) -> TrainEngine:
    """An engine gets the shared engine section and its own block (engine.<name>), their `auto` options resolved
    by the run's speed plan (None: at their fixed defaults, for an engine that only loads weights)."""
    speed = speed or SpeedPlan({})
    engine_cls = TRAIN_ENGINES.get(cfg.engine.name)
    return engine_cls(speed.engine_section(cfg.engine), speed.engine_options(cfg.engine), spec, dist)


def build_components(cfg: RunConfig, dist: DistInfo) -> Components:
    """Cheap checks first (paths, data, plugins), so a mistake fails before any model is loaded."""
    output_dir = Path(cfg.trainer.output_dir)
    model_path = resolve_model_path(cfg.model.path, output_dir)
    check_model_path(model_path, "model.path")
    tokenizer = load_tokenizer(cfg.model.tokenizer_path or model_path, trust_remote_code=cfg.model.trust_remote_code,
                               key="model.tokenizer_path" if cfg.model.tokenizer_path else "model.path")

    train_data = load_prompt_dataset(cfg.data.train_files, cfg.data, tokenizer, max_samples=cfg.data.max_train_samples,
                                     key="data.train_files")
    val_data = (
        load_prompt_dataset(cfg.data.val_files, cfg.data, tokenizer, max_samples=cfg.data.max_val_samples,
                            key="data.val_files")
        if cfg.data.val_files
        else None
    )
    steps_per_epoch = len(train_data) // cfg.data.train_batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"data.train_batch_size={cfg.data.train_batch_size} is larger than the {len(train_data)} training prompts; "
            "lower it or add data"
        )
    total_steps = cfg.trainer.num_steps(steps_per_epoch)
    check_data_sources(cfg.reward, _data_sources(train_data, val_data))  # before any model loads
    reward = build_reward_manager(cfg.reward)
    new_environment = build_environments(cfg, tokenizer, train_data)
    rollout_cls = ROLLOUT_ENGINES.get(cfg.rollout.name)
    critic_path = None
    if estimator_for(cfg.algorithm.adv_estimator).needs_values:
        critic_path = resolve_model_path(cfg.critic.model_path or model_path, output_dir,
                                         "critic.model_path" if cfg.critic.model_path else "model.path")
        check_model_path(critic_path, "critic.model_path" if cfg.critic.model_path else "model.path")

    speed = plan_speed(cfg, dist, model_path=model_path, critic_path=critic_path)
    temperature = cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0
    common = dict(trust_remote_code=cfg.model.trust_remote_code, temperature=temperature, seed=cfg.trainer.seed,
                  total_optimizer_steps=total_steps * optimizer_steps_per_training_step(cfg))
    actor = build_engine(cfg, EngineSpec(role="actor", model_path=model_path, optim=cfg.optim, lora=cfg.model.lora,
                                         **common), dist, speed)
    ref = None
    if uses_reference(cfg) and cfg.model.lora is None:
        ref = build_engine(cfg, EngineSpec(role="ref", model_path=model_path, **common), dist, speed)
    critic = None
    if critic_path is not None:
        critic = build_engine(cfg, EngineSpec(role="critic", model_path=critic_path, optim=cfg.critic.optim,
                                              **common), dist, speed)

    rollout = rollout_cls(cfg.rollout, cfg.rollout.options, model_path, tokenizer, dist, seed=cfg.trainer.seed)
    return Components(tokenizer, model_path, actor, ref, critic, rollout, reward, train_data, val_data, total_steps,
                      new_environment, speed)


def build_environments(cfg: RunConfig, tokenizer: Any, train_data: PromptDataset) -> EnvironmentFactory:
    """The environment factory, checked with what it will meet: chat prompts where it needs them, and a chat
    template that can render its messages when conversations have several turns."""
    factory = environment_factory(cfg.environment, tokenizer)
    if needs_chat_prompts(factory) and train_data[0].messages is None:
        raise ConfigError(f"environment '{cfg.environment.name}' needs chat prompts, but data.prompt_format gives raw "
                          "text; set data.prompt_format=chat (the tokenizer needs a chat template)")
    if cfg.rollout.max_turns > 1:
        ChatRenderer(tokenizer)
    return factory


def build_experience(cfg: RunConfig, parts: Components, dist: DistInfo, timer: PhaseTimer) -> ExperienceSource:
    """The synchronous source: this rank's rollout engine, a conversation with an environment per sample (one
    response with the default single-turn environment)."""
    tokenizer = parts.tokenizer
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generation = MultiTurnGeneration(parts.rollout, tokenizer, pad_token_id, parts.new_environment,
                                     max_turns=cfg.rollout.max_turns, max_total_tokens=cfg.rollout.max_total_tokens,
                                     num_workers=cfg.environment.num_workers)
    return ColocatedExperience(cfg, rollout=parts.rollout, generation=generation, reward=parts.reward,
                               train_data=parts.train_data, val_data=parts.val_data, dist=dist, timer=timer,
                               return_logprobs=parts.speed.value(ROLLOUT_LOGPROBS))


def _data_sources(train_data: PromptDataset, val_data: PromptDataset | None) -> dict[str, str]:
    """{data_source: the config key of the first files it occurs in}."""
    sources: dict[str, str] = {}
    for key, data in (("data.train_files", train_data), ("data.val_files", val_data or [])):
        for record in data:
            sources.setdefault(record.data_source, key)
    return sources


def loss_agg_mode(cfg: RunConfig) -> str:
    """algorithm.loss_agg_mode; when unset the policy loss's declared mode, else the estimator's."""
    algorithm = cfg.algorithm
    return loss_agg_mode_for(algorithm.loss_agg_mode, policy_loss=algorithm.policy_loss,
                             adv_estimator=algorithm.adv_estimator)


def loss_norm_length(cfg: RunConfig) -> int:
    return cfg.algorithm.loss_agg_norm_length or cfg.rollout.response_budget
