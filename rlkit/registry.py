"""Name -> component registries: the only place a name in a config becomes an object.

One generic :class:`Registry` serves every kind of component. A name resolves, in order, to
  1. a component registered in code (``@ADV_ESTIMATORS.register("grpo")``),
  2. a built-in registered lazily by dotted path, imported only when selected (vLLM, DeepSpeed),
  3. a third-party component advertised through an entry point group (``rlkit.rewards``, ...),
  4. an explicit reference: ``package.module:attr`` or ``path/to/file.py:attr``.
Registering a name twice is an error; an unknown name is an error that lists the known names.

A training or rollout engine is described here once, by its entry's :class:`Backend`: the options block it
reads (``engine.<name>``, ``rollout.<name>``), whether it needs a GPU, and the options that lower its memory.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Literal, Mapping, TypeVar

from rlkit.errors import PluginError

T = TypeVar("T")


@dataclass(frozen=True)
class Backend:
    """What a training or rollout engine is, beyond its class: the one place that says it.

    options: the pydantic model of its options block (`engine.<name>` / `rollout.<name>`), as a class or as
        'module:Class' in a module that imports without the backend's own dependencies, so that a config
        naming it validates where the backend is not installed. None: it takes no options.
    needs_gpu: it has no CPU path (`rlkit bench` skips it on a machine without CUDA).
    memory_knobs: options of its block that lower its memory, named in out-of-memory hints (a number is to be
        lowered, a switch turned on, an unset option set).
    verl_names: the values of verl's `actor.strategy` / `rollout.name` that select it (rlkit.config.verl).
    verl_options: verl keys that set an option of its block, {verl key: option}; several verl switches naming
        one option turn it on when any of them is on.
    tensor_parallel: rollout engines whose block has `tensor_parallel_size`: how an engine of k > 1 GPUs spans
        k consecutive ranks. 'every_rank': each rank runs its part of the engine in its own process and every
        rank of the group is given the same prompts (vLLM's external_launcher); 'first_rank': the group's first
        rank starts the engine, which runs its own workers on the group's GPUs (SGLang). None: not supported.

    A plugin gives its Backend to ``register(..., backend=...)``, or, for an entry point, as the ``backend``
    attribute of the registered class.
    """

    options: type | str | None = None
    needs_gpu: bool = False
    memory_knobs: tuple[str, ...] = ()
    verl_names: tuple[str, ...] = ()
    verl_options: Mapping[str, str] = field(default_factory=dict)
    tensor_parallel: Literal["every_rank", "first_rank"] | None = None


@dataclass(frozen=True)
class Entry:
    """One registered component, as `rlkit list` shows it."""

    name: str
    source: str  # "built-in", "entry point (dist-name)" or "code"
    target: str  # dotted path of the object
    requires: tuple[str, ...] = ()  # importable modules it needs
    backend: Backend | None = None  # engines and rollouts: what they are (None: read from the object)

    @property
    def missing(self) -> list[str]:
        return [module for module in self.requires if importlib.util.find_spec(module) is None]


def is_reference(spec: str) -> bool:
    """True for ``package.module:attr`` and ``path/to/file.py:attr`` specs."""
    return ":" in spec


def load_object(spec: str) -> Any:
    """Import ``package.module:attr`` or ``path/to/file.py:attr`` (trusted code: it is executed)."""
    module_part, _, attr = spec.rpartition(":")
    if not module_part or not attr:
        raise PluginError(f"'{spec}' is not a reference: write 'package.module:attr' or 'path/to/file.py:attr'")
    if module_part.endswith(".py"):
        path = Path(module_part).expanduser()
        if not path.is_file():
            raise PluginError(f"'{spec}': file {path} does not exist")
        module_name = f"rlkit_user_{path.stem}_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(module_name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[module_name] = module
            try:
                loader_spec.loader.exec_module(module)
            except Exception as error:
                del sys.modules[module_name]
                raise PluginError(f"'{spec}': importing {path} failed: {type(error).__name__}: {error}") from error
    else:
        try:
            module = importlib.import_module(module_part)
        except ImportError as error:
            raise PluginError(
                f"'{spec}': cannot import module '{module_part}': {error}; install the package that provides it, "
                "or check the spelling"
            ) from error
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise PluginError(f"'{spec}': module '{module_part}' has no attribute '{attr}'") from None
    return obj


class Registry(Generic[T]):
    """Maps names to components of one kind.

    Args:
        kind: human name used in messages ("advantage estimator").
        entry_point_group: the group third-party packages advertise components under.
        builtin_modules: modules whose import registers the built-ins; imported on first lookup so that
            `import rlkit` stays light and registration order cannot matter.
    """

    def __init__(self, kind: str, entry_point_group: str, builtin_modules: Iterable[str] = ()):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._builtin_modules = tuple(builtin_modules)
        self._objects: dict[str, T] = {}
        self._entries: dict[str, Entry] = {}
        self._loaded = False

    # -- registration ---------------------------------------------------------------------------
    def register(self, name: str, obj: T | None = None, *, aliases: Iterable[str] = (),
                 backend: Backend | None = None) -> Any:
        """Register ``obj`` under ``name`` (and aliases); usable as a decorator when obj is None."""

        def add(target: T) -> T:
            source = "built-in" if getattr(target, "__module__", "").startswith("rlkit.") else "code"
            dotted = f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', repr(target))}"
            for key in (name, *aliases):
                self._check_free(key)
                self._objects[key] = target
                self._entries[key] = Entry(key, source, dotted, backend=backend)
            return target

        return add if obj is None else add(obj)

    def register_lazy(self, name: str, target: str, *, requires: Iterable[str] = (),
                      backend: Backend | None = None) -> None:
        """Register a built-in by dotted path; it is imported only when selected."""
        self._check_free(name)
        self._entries[name] = Entry(name, "built-in", target, tuple(requires), backend)

    def unregister(self, name: str) -> None:
        """Remove a name (tests and plugin reloading)."""
        self._objects.pop(name, None)
        self._entries.pop(name, None)

    def _check_free(self, name: str) -> None:
        if name in self._entries:
            raise PluginError(
                f"{self.kind} '{name}' is registered twice (first by {self._entries[name].target}); "
                "choose another name"
            )

    # -- lookup ---------------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """The component for a registered name or a ``module:attr`` / ``file.py:attr`` reference."""
        self._load()
        if name in self._objects:
            return self._objects[name]
        entry = self._entries.get(name)
        if entry is not None:
            if entry.missing:
                raise PluginError(
                    f"{self.kind} '{name}' needs {', '.join(entry.missing)}, which is not installed; "
                    f"install it with: pip install 'rlkit[{name}]'"
                    if entry.source == "built-in"
                    else f"{self.kind} '{name}' needs {', '.join(entry.missing)}, which is not installed"
                )
            obj = load_object(entry.target)
            self._objects[name] = obj
            return obj
        if is_reference(name):
            return load_object(name)
        raise PluginError(self.unknown_message(name))

    def backend(self, name: str) -> Backend:
        """What the engine registered (or referenced) as `name` is; Backend() when it says nothing.

        A built-in's entry says it without importing the engine; a plugin that gave no Backend when it was
        registered is imported to read its ``backend`` attribute.
        """
        self._load()
        entry = self._entries.get(name)
        if entry is not None and entry.backend is not None:
            return entry.backend
        described = getattr(self.get(name), "backend", None)
        return described if isinstance(described, Backend) else Backend()

    def options_class(self, name: str) -> type | None:
        """The pydantic model of the options block of the engine `name`, or None when it takes none."""
        options = self.backend(name).options
        return load_object(options) if isinstance(options, str) else options

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        self._load()
        return [self._entries[name] for name in sorted(self._entries)]

    def unknown_message(self, name: str) -> str:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return (
            f"unknown {self.kind} '{name}'.{hint} Known: {', '.join(known)}. "
            "A plugin can also be named as 'package.module:attr' or 'path/to/file.py:attr'."
        )

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # set first: built-in modules call register() while importing
        for module in self._builtin_modules:
            importlib.import_module(module)
        for entry_point in importlib.metadata.entry_points(group=self.entry_point_group):
            if entry_point.name in self._entries:
                continue  # a built-in wins; `rlkit list` shows the built-in
            dist = entry_point.dist.name if entry_point.dist else "?"
            self._entries[entry_point.name] = Entry(entry_point.name, f"entry point ({dist})", entry_point.value)

    def reload_entry_points(self) -> None:
        """Look for entry points again (after installing a plugin into a running process)."""
        self._loaded = False
        self._load()


# The registries. Built-ins register themselves in the modules listed here.
TRAIN_ENGINES: Registry[Callable[..., Any]] = Registry("training engine", "rlkit.engines")
ROLLOUT_ENGINES: Registry[Callable[..., Any]] = Registry("rollout engine", "rlkit.rollouts")
ADV_ESTIMATORS: Registry[Callable[..., Any]] = Registry(
    "advantage estimator", "rlkit.advantage_estimators", ["rlkit.algorithms.advantages"]
)
POLICY_LOSSES: Registry[Callable[..., Any]] = Registry(
    "policy loss", "rlkit.policy_losses", ["rlkit.algorithms.policy_losses"]
)
REWARDS: Registry[Any] = Registry("reward", "rlkit.rewards", ["rlkit.rewards.builtin"])
ENVIRONMENTS: Registry[Callable[..., Any]] = Registry(
    "environment", "rlkit.environments", ["rlkit.environments.builtin"]
)
TOOLS: Registry[Callable[..., Any]] = Registry("tool", "rlkit.tools", ["rlkit.tools.builtin"])

# The built-in engines: each one's class, options block, memory knobs and verl names, and nowhere else.
_VERL_ACTOR = "actor_rollout_ref.actor.fsdp_config."
_VERL_REF = "actor_rollout_ref.ref.fsdp_config."
_VERL_ROLLOUT = "actor_rollout_ref.rollout."
TRAIN_ENGINES.register_lazy(
    "fsdp2", "rlkit.engines.fsdp2.engine:FSDP2Engine",
    backend=Backend(
        "rlkit.engines.fsdp2.options:FSDP2Options", memory_knobs=("cpu_offload",), verl_names=("fsdp", "fsdp2"),
        verl_options={f"{_VERL_ACTOR}param_offload": "cpu_offload", f"{_VERL_ACTOR}optimizer_offload": "cpu_offload",
                      f"{_VERL_ACTOR}reshard_after_forward": "reshard_after_forward",
                      f"{_VERL_REF}param_offload": "offload_ref"},
    ),
)
TRAIN_ENGINES.register_lazy(
    "deepspeed", "rlkit.engines.deepspeed.engine:DeepSpeedEngine", requires=["deepspeed"],
    backend=Backend(
        "rlkit.engines.deepspeed.options:DeepSpeedOptions", memory_knobs=("offload_optimizer", "offload_param"),
        verl_options={f"{_VERL_ACTOR}param_offload": "offload_param",
                      f"{_VERL_ACTOR}optimizer_offload": "offload_optimizer",
                      f"{_VERL_REF}param_offload": "offload_ref"},
    ),
)
ROLLOUT_ENGINES.register_lazy(
    "hf", "rlkit.rollout.hf:HFRollout",
    backend=Backend("rlkit.rollout.hf_options:HFOptions", memory_knobs=("batch_size",), verl_names=("hf",)),
)
ROLLOUT_ENGINES.register_lazy(
    "vllm", "rlkit.rollout.vllm:VLLMRollout", requires=["vllm"],
    backend=Backend(
        "rlkit.rollout.vllm_options:VLLMOptions", needs_gpu=True, memory_knobs=("gpu_memory_utilization",),
        verl_names=("vllm",), tensor_parallel="every_rank",
        verl_options={f"{_VERL_ROLLOUT}gpu_memory_utilization": "gpu_memory_utilization",
                      f"{_VERL_ROLLOUT}tensor_model_parallel_size": "tensor_parallel_size",
                      f"{_VERL_ROLLOUT}enforce_eager": "enforce_eager",
                      f"{_VERL_ROLLOUT}enable_prefix_caching": "enable_prefix_caching",
                      f"{_VERL_ROLLOUT}max_model_len": "max_model_len"},
    ),
)
ROLLOUT_ENGINES.register_lazy(
    "sglang", "rlkit.rollout.sglang:SGLangRollout", requires=["sglang"],
    backend=Backend(
        "rlkit.rollout.sglang_options:SGLangOptions", needs_gpu=True, memory_knobs=("mem_fraction_static",),
        verl_names=("sglang",), tensor_parallel="first_rank",
        verl_options={f"{_VERL_ROLLOUT}gpu_memory_utilization": "mem_fraction_static",
                      f"{_VERL_ROLLOUT}tensor_model_parallel_size": "tensor_parallel_size",
                      f"{_VERL_ROLLOUT}enforce_eager": "disable_cuda_graph"},
    ),
)

ALL_REGISTRIES = {
    "engines": TRAIN_ENGINES,
    "rollouts": ROLLOUT_ENGINES,
    "advantage_estimators": ADV_ESTIMATORS,
    "policy_losses": POLICY_LOSSES,
    "rewards": REWARDS,
    "environments": ENVIRONMENTS,
    "tools": TOOLS,
}
