"""A catalogue of user mistakes through the real CLI: each ends with exit code 2 and one message naming the
file, row, key or flag, with no traceback (`--debug` shows one), and nothing written or lost: a new
trainer.output_dir is not created, and an output directory that holds a run is left exactly as it was."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest


@dataclass
class Inputs:
    """Bad (and a few good) files for the cases, in one directory."""

    root: Path
    tiny: str
    run: Path | None = None  # a copy of a finished run, for the cases that resume one

    def __getattr__(self, name: str) -> Path:
        return self.root / name


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model) -> Inputs:
    root = tmp_path_factory.mktemp("inputs")
    tiny = Path(tiny_model)
    files = {
        "bad.yaml": "trainer:\n  total_steps: [2\n",
        "list.yaml": "- trainer\n- model\n",
        "typo.yaml": "trainer:\n  total_step: 2\n",
        "bad_row.jsonl": '{"prompt": "repeat the letter a", "answer": "a"}\n{"prompt": "oops",\n',
        "no_key.jsonl": '{"prompt": "repeat the letter a", "answer": "a"}\n{"question": "hi", "answer": "a"}\n',
        "empty.jsonl": "",
        "empty_prompt.jsonl": '{"prompt": "", "answer": "a"}\n',
        "object.json": '{"prompt": "repeat the letter a", "answer": "a"}\n',
        "data.csv": "prompt,answer\nhi,a\n",
        "syntax.py": "def reward(data_source, solution_str:\n",
        "good.py": "def reward(data_source, solution_str, ground_truth, extra_info):\n    return 1.0\n",
        "wrong_signature.py": "def reward(text):\n    return 1.0\n",
        "returns_text.py": "def reward(data_source, solution_str, ground_truth, extra_info):\n    return 'high'\n",
        "raises.py": "def reward(data_source, solution_str, ground_truth, extra_info):\n    return 1 / 0\n",
        "a_file": "not a directory\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "latin1.jsonl").write_bytes('{"prompt": "café", "answer": "a"}\n'.encode("latin-1"))
    (root / "my_task.jsonl").write_text('{"prompt": "repeat the letter a", "answer": "a"}\n' * 8)
    (root / "source_number.jsonl").write_text('{"prompt": "repeat the letter a", "answer": "a", "data_source": 5}\n')
    (root / "not_a_checkpoint").mkdir()
    (root / "full_export").mkdir()
    (root / "full_export" / "keep.txt").write_text("mine\n")
    (root / "no_config").mkdir()
    (root / "no_tokenizer").mkdir()
    shutil.copy(tiny / "config.json", root / "no_tokenizer")
    shutil.copy(tiny / "model.safetensors", root / "no_tokenizer")
    shutil.copytree(tiny, root / "no_weights")
    (root / "no_weights" / "model.safetensors").unlink()
    shutil.copytree(tiny, root / "broken_weights")
    (root / "broken_weights" / "model.safetensors").write_bytes(b"\x00\x01garbage")
    return Inputs(root, tiny_model)


@dataclass
class Case:
    id: str
    args: Callable[[Inputs], list]  # overrides after the small run's (later keys win); export: its arguments
    named: list[str]  # what the message must contain
    lead: Callable[[Inputs], list] = lambda x: []  # a config file and flags, before the overrides
    on_run: bool = False  # True: output_dir is a copy of a finished run (total_steps=3), which must not change
    command: str = "train"
    prepare: Callable[[Inputs], None] = lambda x: None  # damage the run copy first
    output_dir: Callable[[Inputs], Path] | None = None  # an output_dir that is itself the mistake
    needs_missing: str = ""  # skip when this module is installed
    runs: bool = False  # the run gets past its setup and fails in a step: its lock file records the failed attempt


CASES = [
    # -- config files, overrides and flags ----------------------------------------------------------------
    Case("unknown-key", lambda x: ["trainer.total_step=3"],
         ["unknown key 'trainer.total_step'", "trainer.total_steps"]),
    Case("wrong-type", lambda x: ["trainer.total_steps=many"], ["trainer.total_steps", "'many'"]),
    Case("out-of-range", lambda x: ["rollout.n=0"], ["rollout.n", "greater than or equal to 1"]),
    Case("config-missing", lambda x: [], ["nope.yaml does not exist"], lead=lambda x: [x.root / "nope.yaml"]),
    Case("config-not-yaml", lambda x: [], ["bad.yaml is not valid YAML"], lead=lambda x: [x.root / "bad.yaml"]),
    Case("config-a-list", lambda x: [], ["list.yaml must hold a mapping"], lead=lambda x: [x.root / "list.yaml"]),
    Case("config-typo", lambda x: [], ["typo.yaml", "did you mean 'trainer.total_steps'"],
         lead=lambda x: [x.root / "typo.yaml"]),
    Case("stray-argument", lambda x: ["trainer.seed=3", "oops"], ["argument 'oops'", "key.path=value"]),
    Case("malformed-override", lambda x: ["trainer.=3"], ["override 'trainer.=3'", "key.path=value"]),
    Case("engine-flag-unknown", lambda x: [], ["engine.name", "unknown training engine 'nope'"],
         lead=lambda x: ["--engine", "nope"]),
    Case("estimator-flag-unknown", lambda x: [], ["unknown advantage estimator 'nope'"],
         lead=lambda x: ["--adv-estimator", "nope"]),
    Case("rollout-vllm-not-installed", lambda x: [], ["'vllm' needs vllm", "pip install 'rlkit[vllm]'"],
         lead=lambda x: ["--rollout", "vllm"], needs_missing="vllm"),
    Case("engine-plugin-not-installed", lambda x: ["engine.name=rlkit_missing_engine:Engine"],
         ["rlkit_missing_engine", "No module named"]),
    Case("batch-larger-than-data", lambda x: ["data.train_batch_size=400", "algorithm.mini_batch_size=400"],
         ["data.train_batch_size=400 is larger than the 200 training prompts"]),
    Case("mini-batch-does-not-divide", lambda x: ["algorithm.mini_batch_size=3"], ["algorithm.mini_batch_size=3"]),
    Case("output-dir-is-a-file", lambda x: [], ["trainer.output_dir=", "a_file is a file"],
         output_dir=lambda x: x.root / "a_file"),
    Case("output-dir-under-a-file", lambda x: [], ["cannot be created", "a_file is a file"],
         output_dir=lambda x: x.root / "a_file" / "run"),
    Case("output-dir-name-too-long", lambda x: [], ["trainer.output_dir: the name 'xxxx", "is 300 bytes long",
                                                    "more than the 255"],
         output_dir=lambda x: x.root / "new" / ("x" * 300)),
    # -- model paths ---------------------------------------------------------------------------------------
    Case("model-missing", lambda x: [f"model.path={x.root / 'no_model'}"], ["model.path", "no_model' does not exist"],
         on_run=True),
    Case("model-without-config", lambda x: [f"model.path={x.no_config}"], ["model.path", "has no config.json"]),
    Case("model-without-tokenizer", lambda x: [f"model.path={x.no_tokenizer}"],
         ["no_tokenizer' holds no tokenizer", "model.tokenizer_path"]),
    Case("model-without-weights", lambda x: [f"model.path={x.no_weights}"], ["no_weights", "model.safetensors"]),
    Case("model-weights-damaged", lambda x: [f"model.path={x.broken_weights}"], ["broken_weights", "SafetensorError"]),
    Case("tokenizer-path-missing", lambda x: [f"model.tokenizer_path={x.root / 'no_tok'}"], ["model.tokenizer_path"]),
    Case("critic-path-missing", lambda x: ["algorithm.adv_estimator=gae", f"critic.model_path={x.root / 'no_critic'}"],
         ["critic.model_path", "no_critic' does not exist"]),
    # -- data files ----------------------------------------------------------------------------------------
    Case("data-missing", lambda x: [f"data.train_files=[{x.root / 'nope.jsonl'}]"], ["nope.jsonl", "data.train_files"],
         on_run=True),
    Case("val-data-missing", lambda x: [f"data.val_files=[{x.root / 'nope.jsonl'}]"], ["nope.jsonl", "data.val_files"]),
    # On the run: other data would be refused for the resume itself, so force it to reach the file.
    Case("data-bad-row", lambda x: [f"data.train_files=[{x.root / 'bad_row.jsonl'}]", "trainer.force_resume=true"],
         ["bad_row.jsonl line 2 is not valid JSON"], on_run=True),
    Case("data-row-without-prompt", lambda x: [f"data.train_files=[{x.root / 'no_key.jsonl'}]"],
         ["no_key.jsonl line 2 has no key 'prompt'", "data.prompt_key"]),
    Case("data-empty-prompt",
         lambda x: [f"data.train_files=[{x.root / 'empty_prompt.jsonl'}]", "data.prompt_format=raw"],
         ["empty_prompt.jsonl line 1", "no tokens"]),
    Case("data-file-is-a-directory", lambda x: [f"data.train_files=[{x.not_a_checkpoint}]"],
         ["not_a_checkpoint is a directory"]),
    Case("data-not-utf8", lambda x: [f"data.train_files=[{x.root / 'latin1.jsonl'}]"],
         ["latin1.jsonl line 1 is not UTF-8 text"]),
    Case("data-source-not-text", lambda x: [f"data.train_files=[{x.root / 'source_number.jsonl'}]"],
         ["source_number.jsonl line 1: data_source must be text"]),
    Case("data-empty-file", lambda x: [f"data.train_files=[{x.root / 'empty.jsonl'}]"], ["empty.jsonl has no records"]),
    Case("data-json-not-a-list", lambda x: [f"data.train_files=[{x.root / 'object.json'}]"],
         ["object.json holds a JSON dict", "list of records"]),
    Case("data-unknown-format", lambda x: [f"data.train_files=[{x.root / 'data.csv'}]"], ["data.csv", "'.csv'"]),
    Case("data-unknown-builtin", lambda x: ["data.train_files=[builtin:nope]"], ["builtin:nope", "builtin:letters"]),
    Case("data-all-prompts-too-long", lambda x: ["data.max_prompt_length=2"], ["data.max_prompt_length=2"]),
    # The default model (builtin:tiny) is built inside output_dir: a later mistake must remove it again.
    Case("data-bad-row-default-model",
         lambda x: ["model.path=builtin:tiny", f"data.train_files=[{x.root / 'bad_row.jsonl'}]"],
         ["bad_row.jsonl line 2"]),
    # -- reward plugins ------------------------------------------------------------------------------------
    Case("reward-unknown", lambda x: ["reward.name=nope"], ["unknown reward 'nope'", "Known:"], on_run=True),
    Case("reward-syntax-error", lambda x: [f"reward.name={x.root / 'syntax.py'}:reward"],
         ["syntax.py", "SyntaxError", "line 1"]),
    Case("reward-file-missing", lambda x: [f"reward.name={x.root / 'missing.py'}:reward"],
         ["missing.py does not exist"]),
    Case("reward-attribute-missing", lambda x: [f"reward.name={x.root / 'good.py'}:nothere"],
         ["no attribute 'nothere'"]),
    Case("reward-wrong-signature", lambda x: [f"reward.name={x.root / 'wrong_signature.py'}:reward"],
         ["wrong_signature.py:reward", "has parameters (text)"]),
    Case("reward-unknown-kwarg", lambda x: ["reward.kwargs={weigth: 2}"], ["reward.kwargs weigth"]),
    Case("reward-per-source-unknown", lambda x: ["reward.per_data_source={letters: nope}"],
         ["reward.per_data_source.letters: unknown reward 'nope'"]),
    # Each data_source must have a reward before any model loads, not at the first reward call.
    Case("reward-auto-unknown-data-source", lambda x: [f"data.train_files=[{x.root / 'my_task.jsonl'}]"],
         ["data.train_files has data_source 'my_task', which reward.name=auto cannot score",
          "reward.per_data_source: {'my_task': <reward>}"]),
    # -- algorithm plugins: resolved before anything loads, not at the first update -----------------------
    Case("policy-loss-unknown", lambda x: ["algorithm.policy_loss=ppoo"],
         ["algorithm.policy_loss=ppoo: unknown policy loss 'ppoo'. Did you mean 'ppo'?"]),
    Case("policy-loss-file-missing", lambda x: [f"algorithm.policy_loss={x.root / 'missing.py'}:loss"],
         ["algorithm.policy_loss=", "missing.py does not exist"]),
    Case("policy-loss-attribute-missing", lambda x: [f"algorithm.policy_loss={x.root / 'good.py'}:nothere"],
         ["algorithm.policy_loss=", "no attribute 'nothere'"]),
    Case("reward-returns-text", lambda x: [f"reward.name={x.root / 'returns_text.py'}:reward"],
         ["returns_text.py:reward' failed on sample 0", "returned str as its score", "reward.on_error=zero"],
         on_run=True, runs=True),
    Case("reward-raises", lambda x: [f"reward.name={x.root / 'raises.py'}:reward"],
         ["raises.py:reward' failed on sample 0", "ZeroDivisionError"], on_run=True, runs=True),
    # -- resume paths --------------------------------------------------------------------------------------
    Case("resume-path-missing", lambda x: [f"trainer.resume={x.root / 'no_checkpoint'}"],
         ["trainer.resume=", "no_checkpoint: no such checkpoint directory"]),
    Case("resume-path-not-a-checkpoint", lambda x: [f"trainer.resume={x.not_a_checkpoint}"],
         ["trainer.resume=", "has no manifest.json"]),
    Case("resume-path-corrupted", lambda x: [f"trainer.resume={x.run / 'checkpoints/step_00000002'}"],
         ["trainer.resume=", "actor/model.safetensors does not match its sha256"], on_run=True,
         prepare=lambda x: corrupt(x.run / "checkpoints/step_00000002")),
    Case("resume-disable-over-a-run", lambda x: ["trainer.resume=disable"],
         ["already holds checkpoints and trainer.resume=disable"], on_run=True),
    Case("resume-auto-every-checkpoint-broken", lambda x: [],
         ["no checkpoint in", "is complete", "actor/model.safetensors"],
         on_run=True, prepare=lambda x: [corrupt(x.run / f"checkpoints/step_0000000{step}") for step in (1, 2)]),
    # -- export --------------------------------------------------------------------------------------------
    Case("export-not-a-checkpoint", lambda x: [x.not_a_checkpoint, x.root / "exported"],
         ["not_a_checkpoint is not an rlkit checkpoint"], command="export"),
    Case("export-target-not-empty", lambda x: [x.run, x.full_export], ["full_export exists and is not an empty"],
         command="export", on_run=True),
]


def corrupt(checkpoint: Path) -> Path:
    model = checkpoint / "actor/model.safetensors"
    data = bytearray(model.read_bytes())
    data[-10] ^= 0xFF
    model.write_bytes(bytes(data))
    return checkpoint


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_exits_2_naming_it(case, inputs, run_copy, small_run, invoke, dir_snapshot, tmp_path):
    if case.needs_missing and importlib.util.find_spec(case.needs_missing) is not None:
        pytest.skip(f"{case.needs_missing} is installed")
    inputs.run = run_copy
    case.prepare(inputs)
    fresh = tmp_path / "new" / "run"
    output_dir = case.output_dir(inputs) if case.output_dir else run_copy if case.on_run else fresh
    before = {"run": dir_snapshot(run_copy), "inputs": dir_snapshot(inputs.root)}
    if case.command == "train":
        steps = ["trainer.total_steps=3"] if case.on_run else []
        result = invoke("train", *case.lead(inputs), *small_run(output_dir, *steps), *case.args(inputs))
    else:
        result = invoke(case.command, *case.args(inputs))

    assert result.exit_code == 2, result.output
    message = result.output.strip()
    for named in case.named:
        assert named in message, message
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.output
    assert "error: " in message or "invalid config" in message
    assert not fresh.parent.exists(), sorted(p.name for p in fresh.parent.rglob("*"))
    after = dir_snapshot(run_copy)
    if case.runs:
        assert json.loads((run_copy / ".rlkit.lock").read_text())["state"] == "failed"
        before["run"].pop(".rlkit.lock"), after.pop(".rlkit.lock")
    assert after == before["run"]
    assert dir_snapshot(inputs.root) == before["inputs"]


def test_catalogue_is_broad():
    assert len(CASES) >= 25
    assert len({case.id for case in CASES}) == len(CASES)


def test_real_process_hides_the_traceback_unless_debug(tmp_path, tiny_model):
    """Through a real process: one line on stderr and exit 2; --debug adds the traceback."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["train", f"model.path={tmp_path / 'no_model'}", f"trainer.output_dir={tmp_path / 'out'}"]
    plain = subprocess.run([sys.executable, "-m", "rlkit", *args], capture_output=True, text=True, env=env, timeout=300)
    assert plain.returncode == 2
    assert "Traceback" not in plain.stderr
    errors = [line for line in plain.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: model.path '{tmp_path / 'no_model'}' does not exist: give a local Hugging Face folder "
                      "or 'builtin:tiny'"]
    debug = subprocess.run([sys.executable, "-m", "rlkit", "--debug", *args], capture_output=True, text=True, env=env,
                           timeout=300)
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "RlkitError" in debug.stderr
    assert not (tmp_path / "out").exists()
