"""Turn a RunConfig into the objects a run needs. The registries are the only place a name becomes an object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlkit.algorithms.advantages import estimator_for
from rlkit.algorithms.policy_losses import loss_agg_mode_for
from rlkit.config.auto import Choice
from rlkit.config.schema import BUILTIN_TINY, RunConfig
from rlkit.data import PromptDataset, load_prompt_dataset
from rlkit.distributed import DistInfo, barrier, process_rank
from rlkit.engines.base import EngineSpec, TrainEngine
from rlkit.environments import ChatRenderer, EnvironmentFactory, environment_factory, needs_chat_prompts
from rlkit.errors import ConfigError
from rlkit.experience import ColocatedExperience, ExperienceSource, Generation, MultiTurnGeneration
from rlkit.experience.rollout_worker import RolloutWorker
from rlkit.experience.shards import SeededRollout, ShardSeeds
from rlkit.experience.split import SplitExperience
from rlkit.experience.tensor_parallel import LeaderGeneration
from rlkit.models.loading import check_model_path, load_tokenizer, local_folder
from rlkit.models.tiny import ensure_tiny_model
from rlkit.placement import Placement
from rlkit.registry import ROLLOUT_ENGINES, TRAIN_ENGINES
from rlkit.rewards.base import RewardManager
from rlkit.rewards.loading import build_reward_manager, check_data_sources
from rlkit.rollout.base import RolloutEngine
from rlkit.timing import PhaseTimer
from rlkit.trainer.memory_plan import expect_rollout_sleep
from rlkit.trainer.speed import (
    ROLLOUT_LOGPROBS,
    ROLLOUT_SLEEP,
    MachineFacts,
    SpeedPlan,
    choose_rollout_logprobs,
    choose_rollout_sleep,
    plan_speed,
)


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
    rollout: RolloutEngine | None  # None on a rank that runs no rollout engine (rlkit.placement.layout)
    reward: RewardManager
    train_data: PromptDataset
    val_data: PromptDataset | None
    total_steps: int
    new_environment: EnvironmentFactory  # one environment per conversation (environment.name)
    speed: SpeedPlan  # resolve_static's: the budget and checkpointing may still be pending (settle_memory)


@dataclass
class Inputs:
    """What both sides of a run read: the tokenizer, the prompts, the reward, the environments, the run's
    length."""

    tokenizer: Any
    model_path: str
    reward: RewardManager
    train_data: PromptDataset
    val_data: PromptDataset | None
    total_steps: int
    new_environment: EnvironmentFactory


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


def build_engine(cfg: RunConfig, spec: EngineSpec, dist: DistInfo, speed: SpeedPlan | None = None) -> TrainEngine:
    """An engine gets the shared engine section and its own block (engine.<name>), their `auto` options resolved
    by the run's speed plan (None: at their fixed defaults, for an engine that only loads weights)."""
    speed = speed or SpeedPlan({})
    engine_cls = TRAIN_ENGINES.get(cfg.engine.name)
    return engine_cls(speed.engine_section(cfg.engine), speed.engine_options(cfg.engine), spec, dist)


def build_inputs(cfg: RunConfig) -> Inputs:
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
    return Inputs(tokenizer, model_path, reward, train_data, val_data, total_steps, new_environment)


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


def _data_sources(train_data: PromptDataset, val_data: PromptDataset | None) -> dict[str, str]:
    """{data_source: the config key of the first files it occurs in}."""
    sources: dict[str, str] = {}
    for key, data in (("data.train_files", train_data), ("data.val_files", val_data or [])):
        for record in data:
            sources.setdefault(record.data_source, key)
    return sources


def memory_shape(cfg: RunConfig, dist: DistInfo) -> dict[str, int]:
    """What the memory plan sizes micro-batches for: the longest sequence and this rank's mini-batch."""
    return {"longest": cfg.data.max_prompt_length + cfg.rollout.max_new_tokens,
            "batch_sequences": cfg.algorithm.mini_batch_size * cfg.rollout.n // dist.world_size}


def build_rollout(cfg: RunConfig, inputs: Inputs, placement: Placement, sleep: Choice | None = None
                  ) -> RolloutEngine | None:
    """This rank's rollout engine: None on a trainer of a split job and where the engine group's engine runs from
    its first rank. Engines see their side's world (placement.dist). `sleep`: whether it will sleep, where that is
    decided already (the engine then starts without the means to, if it never will)."""
    if not placement.layout.runs_engine(placement.rank):
        return None
    rollout_cls = ROLLOUT_ENGINES.get(cfg.rollout.name)
    config = cfg.rollout if sleep is None else cfg.rollout.model_copy(update={"sleep": sleep.value})
    return rollout_cls(config, cfg.rollout.options, inputs.model_path, inputs.tokenizer, placement.dist,
                       seed=cfg.trainer.seed)


def build_components(cfg: RunConfig, dist: DistInfo, placement: Placement) -> Components:
    """The inputs, then the training engines, then the rollout engine (where this rank runs one)."""
    inputs = build_inputs(cfg)
    tokenizer, model_path, total_steps = inputs.tokenizer, inputs.model_path, inputs.total_steps
    output_dir = Path(cfg.trainer.output_dir)
    ROLLOUT_ENGINES.get(cfg.rollout.name)  # a misspelled rollout fails before the training engines load
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

    speed = expect_rollout_sleep(speed, cfg, free_after_start=getattr(cfg.rollout.options, "free_after_start", None),
                                 dist=dist, **memory_shape(cfg, dist))
    rollout = build_rollout(cfg, inputs, placement, sleep=speed.choices.get(ROLLOUT_SLEEP))
    return Components(tokenizer, model_path, actor, ref, critic, rollout, inputs.reward, inputs.train_data,
                      inputs.val_data, total_steps, inputs.new_environment, speed)


def build_generation(cfg: RunConfig, rollout: RolloutEngine | None, inputs: Inputs | Components,
                     placement: Placement) -> Generation | None:
    """A conversation with an environment per sample on `rollout` (one response with the default single-turn
    environment); in a colocated engine group whose engine runs from its first rank, the first rank's responses
    reach the group's other ranks."""
    tokenizer = inputs.tokenizer
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generation = None
    if rollout is not None:
        generation = MultiTurnGeneration(rollout, tokenizer, pad_token_id, inputs.new_environment,
                                         max_turns=cfg.rollout.max_turns, max_total_tokens=cfg.rollout.max_total_tokens,
                                         num_workers=cfg.environment.num_workers)
    if placement.engine_group is not None:
        return LeaderGeneration(generation, placement.layout.leader_of(placement.rank), placement.engine_group)
    return generation


def build_experience(cfg: RunConfig, parts: Components, speed: SpeedPlan, dist: DistInfo, timer: PhaseTimer,
                     placement: Placement) -> ExperienceSource:
    """Colocated: this rank's rollout engine (rlkit.experience.colocated). Split: what the rollout ranks send.
    `speed`: the run's settled plan (whether the rollout returns log-probs and sleeps while the trainer works)."""
    if placement.layout.split:
        return SplitExperience(cfg, placement, train_data=parts.train_data, total_steps=parts.total_steps, dist=dist,
                               timer=timer)
    return ColocatedExperience(cfg, rollout=parts.rollout, generation=build_generation(cfg, parts.rollout, parts,
                                                                                       placement),
                               reward=parts.reward, train_data=parts.train_data, val_data=parts.val_data, dist=dist,
                               timer=timer, layout=placement.layout,
                               return_logprobs=speed.value(ROLLOUT_LOGPROBS), sleeps=speed.value(ROLLOUT_SLEEP))


def build_rollout_worker(cfg: RunConfig, placement: Placement) -> RolloutWorker:
    """What a rollout rank of a split job runs: the inputs, its engine, and the loop around them. Whether the
    rollout returns log-probs is decided as the trainers' speed plan decides it (from the config and the device)."""
    inputs = build_inputs(cfg)
    machine = MachineFacts.here(placement.dist)
    return_logprobs = choose_rollout_logprobs(cfg, machine).value
    rollout = build_rollout(cfg, inputs, placement, sleep=choose_rollout_sleep(cfg, machine))
    timer = PhaseTimer(cuda=placement.dist.device.startswith("cuda"))
    seeds = ShardSeeds(cfg.trainer.seed)  # each shard sampled as the colocated rank with that shard would
    try:
        generation = build_generation(cfg, SeededRollout(rollout, seeds) if rollout is not None else None, inputs,
                                      placement)
        return RolloutWorker(cfg, placement, rollout=rollout, generation=generation, reward=inputs.reward,
                             train_data=inputs.train_data, val_data=inputs.val_data, timer=timer, seeds=seeds,
                             return_logprobs=return_logprobs)
    except BaseException:
        if rollout is not None:
            rollout.close()
        raise


def loss_agg_mode(cfg: RunConfig) -> str:
    """algorithm.loss_agg_mode; when unset the policy loss's declared mode, else the estimator's."""
    algorithm = cfg.algorithm
    return loss_agg_mode_for(algorithm.loss_agg_mode, policy_loss=algorithm.policy_loss,
                             adv_estimator=algorithm.adv_estimator)


def loss_norm_length(cfg: RunConfig) -> int:
    return cfg.algorithm.loss_agg_norm_length or cfg.rollout.response_budget
