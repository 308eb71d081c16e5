"""SFT runs on the tiny model at world size 1, in the pytest process (FSDP2 starts a 1-rank group itself)."""

import gc
import json
import weakref

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file
from sft_runs import LORA, checkpoint_weights, compared, read_metrics, run, run_resumed, sft_config

from rlkit.cli.generate import generate_command
from rlkit.distributed import DistInfo
from rlkit.errors import ConfigError
from rlkit.trainer.sft import SFTTrainer

DIST = DistInfo()


def generate(*args):
    result = CliRunner().invoke(generate_command, [str(arg) for arg in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def letters_run(tiny_model_dir, tmp_path_factory):
    """The tiny model taught to repeat letters: 60 steps of 8 demonstrations."""
    out = tmp_path_factory.mktemp("letters")
    run(sft_config(tiny_model_dir, out, "trainer.total_steps=60", "trainer.test_freq=20", "optim.lr=1e-2"), DIST)
    return out


def test_full_sft_learns_the_letters_task(letters_run):
    metrics = read_metrics(letters_run)
    val = [m["val/loss"] for m in metrics if "val/loss" in m]
    assert [m["step"] for m in metrics if "val/loss" in m] == [0, 20, 40, 60]
    assert val[-1] < 0.1 * val[0], val
    last = metrics[-1]
    for key in ("loss", "grad_norm", "lr", "time/step", "throughput/tokens_per_s", "entropy", "epoch"):
        assert key in last, key
    assert last["lr"] == pytest.approx(1e-2) and last["epoch"] == pytest.approx(60 * 8 / 200)


def test_lora_with_default_settings_learns_the_embedded_task(letters_run, tmp_path):
    """`model.lora={}` on the embedded model: the same run as letters_run with adapters (rank 8, alpha 16, every
    linear layer) and the tiny model's random LM head trained in full, which LoRA alone cannot move."""
    run(sft_config("builtin:tiny", tmp_path, "trainer.total_steps=60", "trainer.test_freq=20", "optim.lr=1e-2",
                   "model.lora={}"), DIST)
    full = [m["val/loss"] for m in read_metrics(letters_run) if "val/loss" in m]
    lora = [m["val/loss"] for m in read_metrics(tmp_path) if "val/loss" in m]
    assert lora[0] == pytest.approx(full[0])  # the same model (builtin:tiny is the tiny model of the fixture)
    # 5.78 -> 0.138 against full SFT's 0.174 when written; with the head frozen it stalls near 4.7 (docs/sft.md)
    assert lora[-1] < 3 * full[-1], (lora, full)


def test_checkpoint_has_the_rl_layout(letters_run):
    checkpoint = letters_run / "checkpoints" / "step_00000060"
    for name in ("actor/model.safetensors", "config.yaml", "tokenizer/tokenizer.json", "trainer_state.json",
                 "manifest.json", "rng/rank_0.pt"):
        assert (checkpoint / name).is_file(), name
    saved = yaml.safe_load((checkpoint / "config.yaml").read_text())
    assert saved["kind"] == "sft" and saved["model"]["lora"] is None
    assert json.loads((checkpoint / "trainer_state.json").read_text())["step"] == 60


def test_generate_from_the_run_scores_the_taught_answers(letters_run):
    output = generate(letters_run, "--data", "builtin:letters-val", "--limit", 10, "--reward", "letters",
                      "--max-new-tokens", 12)
    assert f"# checkpoint {letters_run / 'checkpoints' / 'step_00000060'}" in output
    mean = float(output.split("reward letters: mean ")[1].split()[0])
    assert mean >= 0.9, output  # the untrained tiny model scores ~0.2 (random letters, when any)
    sample = output.split("--- sample 0")[1].splitlines()[1].split()
    assert len(sample) >= 8 and len(set(sample)) == 1, output  # "x x x x x x x x" (counting to 8 is harder)


def test_lora_sft_trains_and_saves_only_the_adapters(tiny_model_dir, tmp_path):
    run(sft_config(tiny_model_dir, tmp_path, *LORA, "trainer.total_steps=10", "trainer.test_freq=5"), DIST)
    val = [m["val/loss"] for m in read_metrics(tmp_path) if "val/loss" in m]
    assert val[-1] < val[0] - 0.5, val  # 5.78 -> 4.87 when written
    names = list(checkpoint_weights(tmp_path, 10))
    assert names and all(".lora_A." in name or ".lora_B." in name for name in names), names
    saved = yaml.safe_load((tmp_path / "checkpoints" / "step_00000010" / "config.yaml").read_text())
    assert saved["model"]["lora"]["rank"] == 4
    output = generate(tmp_path, "--prompt", "repeat the letter a", "--reward", "letters", "--ground-truth", "a",
                      "--max-new-tokens", 4)
    assert "LoRA merged" in output and "reward letters: mean" in output


def test_resume_reproduces_the_uninterrupted_run(tiny_model_dir, tmp_path):
    # LoRA with dropout: exactness needs the RNG state back too, not only weights, optimizer and sampler
    steps = ["trainer.total_steps=4", "trainer.save_freq=2", *LORA, "model.lora.dropout=0.2"]
    run(sft_config(tiny_model_dir, tmp_path / "straight", *steps), DIST)
    run_resumed(sft_config(tiny_model_dir, tmp_path / "resumed", *steps), DIST, crash_at_step=3)
    assert compared(read_metrics(tmp_path / "resumed")) == compared(read_metrics(tmp_path / "straight"))
    straight, resumed = checkpoint_weights(tmp_path / "straight", 4), checkpoint_weights(tmp_path / "resumed", 4)
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)


def test_micro_batch_size_does_not_change_the_update(tiny_model_dir, tmp_path):
    runs = {}
    for micro in (1, 8):
        out = tmp_path / f"micro{micro}"
        run(sft_config(tiny_model_dir, out, f"data.micro_batch_size_per_device={micro}", "trainer.total_steps=2",
                       "trainer.val_before_train=false"), DIST)
        runs[micro] = (read_metrics(out), checkpoint_weights(out, 2))
    for one, eight in zip(runs[1][0], runs[8][0], strict=True):
        assert one["loss"] == pytest.approx(eight["loss"], rel=1e-5)
        assert one["grad_norm"] == pytest.approx(eight["grad_norm"], rel=1e-4)
    for name, weight in runs[1][1].items():
        # Adam normalises each coordinate: near-zero gradients that differ in rounding can move by a few % of lr
        torch.testing.assert_close(weight, runs[8][1][name], rtol=0, atol=2e-4)


def test_global_batch_must_split_over_the_ranks(tiny_model_dir, tmp_path):
    cfg = sft_config(tiny_model_dir, tmp_path, "data.train_batch_size=6")
    with pytest.raises(ConfigError, match="data.train_batch_size=6 does not split over 4 ranks"):
        SFTTrainer(cfg, DistInfo(world_size=4))


def test_resume_disable_refuses_an_output_dir_with_checkpoints(tiny_model_dir, tmp_path):
    run(sft_config(tiny_model_dir, tmp_path, "trainer.total_steps=1"), DIST)
    with pytest.raises(ConfigError, match="already holds checkpoints and trainer.resume=disable"):
        run(sft_config(tiny_model_dir, tmp_path, "trainer.total_steps=1", "trainer.resume=disable"), DIST)


def test_adapter_file_loads_into_peft_names(tiny_model_dir, tmp_path):
    """The LoRA checkpoint's tensors are peft's names, so an export can rebuild the adapter from them."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run(sft_config(tiny_model_dir, tmp_path, *LORA, "trainer.total_steps=1"), DIST)
    adapters = load_file(tmp_path / "checkpoints" / "step_00000001" / "actor" / "model.safetensors")
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    expected = {name for name in peft_model.state_dict() if ".lora_" in name}
    assert set(adapters) == expected  # base_model.model.model.layers.0.mlp.down_proj.lora_A.default.weight, ...


def test_an_rl_checkpoint_is_not_resumed(tiny_model_dir, tmp_path):
    from rlkit.errors import CheckpointError
    from rlkit.trainer.checkpoint import write_manifest

    checkpoint = tmp_path / "checkpoints" / "step_00000005"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"step": 5, "sampler": {}, "kl_ctrl": {}}))
    write_manifest(checkpoint, 5)
    with pytest.raises(CheckpointError, match="step_00000005 is not an SFT checkpoint"):
        run(sft_config(tiny_model_dir, tmp_path), DIST)


def test_packed_sequences_give_the_same_update(tiny_model_dir, tmp_path, monkeypatch):
    """engine.pack_sequences: each micro-batch's samples run as one packed row, with no padding."""
    from rlkit.engines import varlen_attention

    packed_calls = []
    attend = varlen_attention.varlen_causal_attention
    monkeypatch.setattr(varlen_attention, "varlen_causal_attention",
                        lambda *args, **kwargs: packed_calls.append(1) or attend(*args, **kwargs))
    runs = {}
    for name, switches in {"padded": [], "packed": ["engine.pack_sequences=true"]}.items():
        out = tmp_path / name
        run(sft_config(tiny_model_dir, out, "data.micro_batch_size_per_device=8", "trainer.total_steps=2",
                       "trainer.val_before_train=false", *switches), DIST)
        runs[name] = (read_metrics(out), checkpoint_weights(out, 2))
        assert bool(packed_calls) == (name == "packed")
    for padded, packed in zip(runs["padded"][0], runs["packed"][0], strict=True):
        assert padded["loss"] == pytest.approx(packed["loss"], rel=1e-5)
        assert padded["grad_norm"] == pytest.approx(packed["grad_norm"], rel=1e-4)
    for name, weight in runs["padded"][1].items():
        torch.testing.assert_close(weight, runs["packed"][1][name], rtol=0, atol=2e-4)  # Adam: see above


def test_the_first_step_reports_only_its_own_collector_time(tiny_model_dir, tmp_path):
    """`time/gc` of a step is the collector's seconds within that step; setup's collections (model loading, an
    in-process rollout engine's start-up) happen before it and are not the first step's."""
    trainer = SFTTrainer(sft_config(tiny_model_dir, tmp_path, "trainer.total_steps=1"), DIST)
    trainer.timer.gc_seconds = 1000.0  # as if setup had spent that long collecting
    last = trainer.fit()
    assert 0 <= last["time/gc"] < last["time/step"] < 1000


class _Cycle:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self):
        self.me = self


def test_the_steps_run_with_setup_s_objects_frozen_and_its_garbage_collected(tiny_model_dir, tmp_path):
    trainer = SFTTrainer(sft_config(tiny_model_dir, tmp_path, "trainer.total_steps=2", "trainer.test_freq=0"), DIST)
    garbage = weakref.ref(_Cycle())  # unreachable at once, still alive until a collection
    frozen_before = gc.get_freeze_count()
    seen = []
    step = trainer.train_step

    def recording_step(indices):
        seen.append((gc.get_freeze_count(), garbage() is None))
        return step(indices)

    trainer.train_step = recording_step
    trainer.fit()
    assert len(seen) == 2
    assert all(frozen > frozen_before + 1000 and collected for frozen, collected in seen), seen  # models, engines
    assert gc.get_freeze_count() == 0  # given back to the collector once the steps end
