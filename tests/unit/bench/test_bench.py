"""`rlkit bench`: the CPU run end to end, the shapes' sizes, the summary arithmetic, prompts and random models."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

from rlkit.bench import runner
from rlkit.bench.machine import Machine
from rlkit.bench.runner import skip_reason, summarize
from rlkit.bench.shapes import SHAPES, Shape, count_parameters
from rlkit.bench.workload import Workload, bench_tokenizer, build_random_model, write_prompts
from rlkit.errors import ConfigError

CPU = Machine(gpu=None, num_gpus=0, cpu="test cpu", num_cpu_cores=2)


@pytest.fixture(autouse=True)
def single_thread(monkeypatch):
    # Two threads on two cores made tiny-model timings swing 100x (measured on the 2-core CI machine); children
    # inherit it.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_cpu_bench_runs_hf_and_skips_vllm(tmp_path, monkeypatch):
    from rlkit.cli.bench import bench_command
    from rlkit.cli.main import cli

    cli.add_command(bench_command)  # idempotent: main.py may register it already
    monkeypatch.setattr(runner, "probe_machine", lambda: CPU)  # the same answer on a GPU machine
    out = tmp_path / "bench"
    result = CliRunner().invoke(cli, [
        "bench", "--shape", "tiny", "--engine", "fsdp2", "--rollout", "hf,vllm", "--steps", "2", "--warmup", "1",
        "--prompts", "4", "--n", "2", "--prompt-len", "8", "--response-len", "8", "--out", str(out),
        "trainer.device=cpu",
    ])
    assert result.exit_code == 0, result.output
    assert "fsdp2 x hf" in result.output and "skipped fsdp2 x vllm: " in result.output

    report = json.loads((out / "bench.json").read_text())
    assert report["workload"]["shape"] == "tiny" and report["machine"]["gpu"] is None
    ran, skipped = report["pairings"]
    assert (ran["engine"], ran["rollout"], ran["status"]) == ("fsdp2", "hf", "ok")
    assert {"weight_sync", "generate", "reward", "old_logprobs", "ref_logprobs", "update"} <= set(ran["phases"])
    assert all(seconds > 0 for seconds in ran["phases"].values())
    assert ran["num_steps"] == 2 and ran["rollout_tokens_per_s"] > 0 and ran["train_tokens_per_s"] > 0
    assert ran["mfu"] is None and ran["peak_memory_gb"] is None  # CPU: no peak FLOPs, no CUDA allocator
    assert (skipped["rollout"], skipped["status"]) == ("vllm", "skipped") and "CUDA" in skipped["reason"]
    assert (out / "bench.png").stat().st_size > 0

    # Every prompt is exactly --prompt-len tokens and every response --response-len: 4 x 2 x (8 + 8) per step.
    records = [json.loads(line) for line in (out / "runs/fsdp2-hf/metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [1, 2, 3]
    for record in records:
        assert record["response_length/mean"] == 8
        assert record["throughput/tokens_per_s"] * record["time/step"] == pytest.approx(4 * 2 * 16)


def test_shape_parameter_counts_match_qwen25():
    # The published sizes: Qwen2.5-0.5B 494,032,768; 1.5B 1,543,714,304; 7B 7,615,616,512 parameters.
    expected = {"0.5b": 494_032_768, "1.5b": 1_543_714_304, "7b": 7_615_616_512}
    for name, count in expected.items():
        assert count_parameters(SHAPES[name].config(eos_token_id=0, pad_token_id=0)) == count, name


def test_summarize_takes_medians_after_warmup():
    def record(step, generate, update, step_s):
        # 10 samples of 4 generated tokens; 60 tokens in the step (tokens/s x step time)
        return {"step": step, "time/generate": generate, "time/update": update, "time/reward": 0.5,
                "time/step": step_s, "throughput/tokens_per_s": 60 / step_s, "response_length/mean": 4.0,
                "memory/peak_gb": float(step)}

    records = [record(1, 100.0, 100.0, 300.0), record(2, 2.0, 3.0, 6.0), record(3, 4.0, 5.0, 10.0),
               record(4, 8.0, 6.0, 20.0)]
    summary = summarize(records, warmup=1, num_samples=10, num_params=1000, ppo_epochs=2, peak_flops=1e6)
    assert summary["num_steps"] == 3
    assert summary["phases"] == {"generate": 4.0, "reward": 0.5, "update": 5.0}  # step 1 is warm-up
    assert summary["step_s"] == 10.0
    # generated tokens 10 x 4 = 40 per step: 40/2, 40/4, 40/8 -> median 10
    assert summary["rollout_tokens_per_s"] == pytest.approx(10.0)
    # 60 tokens per step: 60/3, 60/5, 60/6 -> median 12
    assert summary["train_tokens_per_s"] == pytest.approx(12.0)
    # 6 x 1000 params x 60 tokens x 2 epochs / 5 s / 1e6 FLOP/s = 0.144 (median step)
    assert summary["mfu"] == pytest.approx(0.144)
    assert summary["peak_memory_gb"] == 4.0  # the largest, not the median
    assert summarize(records, warmup=1, num_samples=10, num_params=1000, ppo_epochs=1, peak_flops=None)["mfu"] is None


def test_peak_flops_by_gpu_name_and_skip_reasons():
    assert Machine("NVIDIA H100 80GB HBM3", 8, "x", 16).peak_flops(2) == 2 * 989e12
    assert Machine("NVIDIA H200", 8, "x", 16).peak_flops(1) == 989e12
    assert Machine("NVIDIA H100 PCIe", 1, "x", 16).peak_flops(1) == 756e12
    assert Machine("NVIDIA H100 NVL", 1, "x", 16).peak_flops(1) == 835e12
    assert Machine("Some Future GPU", 1, "x", 16).peak_flops(1) is None and CPU.peak_flops(1) is None
    assert skip_reason("fsdp2", "hf", CPU) is None
    assert "needs a CUDA GPU" in skip_reason("fsdp2", "sglang", CPU)
    with pytest.raises(ConfigError, match="unknown training engine 'fsdp3'"):
        skip_reason("fsdp3", "hf", CPU)


def test_prompts_have_the_exact_length_and_the_tokenizer_covers_the_vocab(tmp_path):
    tokenizer = bench_tokenizer(1000)
    assert len(tokenizer) == 1000
    assert tokenizer.decode([999]).startswith(" q")  # a filler: every id the model samples decodes to a word
    path = write_prompts(tokenizer, Workload(num_prompts=5, n=2, prompt_len=13, response_len=4, steps=1, warmup=0),
                         tmp_path / "prompts.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 5 and len({row["prompt"] for row in rows}) == 5
    assert all(len(tokenizer(row["prompt"])["input_ids"]) == 13 for row in rows)


def test_random_model_loads_with_the_counted_parameters(tmp_path, monkeypatch):
    from transformers import AutoConfig

    from rlkit.bench import workload
    from rlkit.models.loading import load_causal_lm, load_tokenizer

    monkeypatch.setattr(workload, "_MAX_SHARD_BYTES", 100_000)  # force several shards and an index
    shape = Shape("test", hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64,
                  vocab_size=512, tie_word_embeddings=False)
    directory = build_random_model(shape, tmp_path / "model")
    assert (directory / "model.safetensors.index.json").is_file()
    model = load_causal_lm(str(directory))
    assert sum(p.numel() for p in model.parameters()) == count_parameters(AutoConfig.from_pretrained(directory))
    assert len(load_tokenizer(str(directory))) == 512
    assert torch.equal(model.model.norm.weight, torch.ones(32))
    assert math.isclose(float(model.lm_head.weight.detach().std()), 0.02, rel_tol=0.1)


def test_bench_reward_is_registered_and_varies():
    from rlkit.registry import REWARDS

    score = REWARDS.get("bench")
    assert score("bench", "a cat", None) == 0.5  # a, c, a, t: two vowels of four letters
    assert score("bench", "xyz", None) == 0.0 and score("bench", "", None) == 0.0


def test_a_failing_pairing_is_reported_with_its_last_log_line(tmp_path, monkeypatch):
    import sys

    from rlkit.bench.runner import BenchRequest, pairing_config, run_pairing

    monkeypatch.setattr(runner, "train_command", lambda config_path, nproc: [
        sys.executable, "-c", "print('error: the engine fell over'); raise SystemExit(3)"])
    request = BenchRequest(("fsdp2",), ("hf",), Workload(4, 2, 8, 8, steps=1, warmup=0), out=tmp_path, shape="tiny")
    cfg = pairing_config(request, "fsdp2", "hf", tmp_path / "model", tmp_path / "prompts.jsonl")
    result = run_pairing(cfg, request, CPU, num_params=1)
    assert result.status == "failed" and result.reason.startswith("exit code 3: error: the engine fell over")
    assert (tmp_path / "runs/fsdp2-hf/bench_config.yaml").is_file()


def test_the_table_says_which_pairing_skipped_the_old_logprob_pass(tmp_path):
    from rich.console import Console

    from rlkit.bench.report import print_table
    from rlkit.bench.runner import BenchRequest, BenchResult, PairingResult

    request = BenchRequest(("fsdp2",), ("hf", "vllm"), Workload(4, 2, 8, 8, steps=1, warmup=0), out=tmp_path,
                           shape="tiny", overrides=("algorithm.old_logprobs_from_update=true",))
    # algorithm.old_logprobs_from_update=true: no time/old_logprobs in any run, yet the column stays.
    ran = PairingResult("fsdp2", "hf", "ok", phases={"generate": 1.0, "update": 2.0}, step_s=3.0)
    skipped = PairingResult("fsdp2", "vllm", "skipped", reason="needs a CUDA GPU")
    console = Console(record=True, width=200)
    print_table(BenchResult(request, CPU, None, 1, [ran, skipped]), console)
    text = console.export_text()
    hf_row, vllm_row = (next(line for line in text.splitlines() if name in line) for name in ("x hf", "x vllm"))
    assert "old lp" in text and "values" not in text  # only the old-logprob column is always there
    assert "not run" in hf_row and "not run" not in vllm_row  # a pairing that did not run shows "-"


def test_placements_run_each_pairing_split_with_its_staleness(tmp_path):
    from rich.console import Console

    from rlkit.bench.report import print_table, to_json
    from rlkit.bench.runner import BenchRequest, BenchResult, PairingResult, pairing_config, training_gpus

    request = BenchRequest(("fsdp2",), ("hf",), Workload(4, 2, 8, 8, steps=1, warmup=0), out=tmp_path, shape="tiny",
                           nproc=2, placements=("colocated", "split:1"))
    colocated = pairing_config(request, "fsdp2", "hf", tmp_path / "model", tmp_path / "p.jsonl", "colocated")
    split = pairing_config(request, "fsdp2", "hf", tmp_path / "model", tmp_path / "p.jsonl", "split:1")
    assert (colocated.placement.mode, split.placement.mode, split.placement.staleness) == ("colocated", "split", 1)
    assert split.trainer.output_dir.endswith("runs/fsdp2-hf-split1")
    assert (training_gpus(colocated, 2), training_gpus(split, 2)) == (2, 1)  # MFU counts the training GPUs
    assert "--placement colocated,split:1" in request.command()
    with pytest.raises(ConfigError, match="split:K"):
        pairing_config(request, "fsdp2", "hf", tmp_path / "model", tmp_path / "p.jsonl", "split1")

    rows = [PairingResult("fsdp2", "hf", "ok", placement=placement, phases={"generate": 1.0}, step_s=step)
            for placement, step in (("colocated", 3.0), ("split:1", 2.0))]
    console = Console(record=True, width=200)
    print_table(BenchResult(request, CPU, None, 1, rows), console)
    assert "fsdp2 x hf split:1" in console.export_text()
    assert [row["placement"] for row in to_json(BenchResult(request, CPU, None, 1, rows))["pairings"]] == [
        "colocated", "split:1"]
def test_the_record_shows_what_auto_picked(tmp_path, monkeypatch):
    import sys

    from rich.console import Console

    from rlkit.bench.report import print_table, to_json
    from rlkit.bench.runner import BenchRequest, BenchResult, pairing_config, run_pairing

    header = ["INFO rlkit.trainer.speed: speed: engine.pack_sequences=true (auto: CUDA, bf16, flash varlen kernel: no "
              "padding is computed)",
              "INFO rlkit.trainer.speed: speed: engine.max_tokens_per_micro_batch=53248 (auto: 61.2 GiB free)",
              "INFO rlkit.trainer.speed: speed: rollout.return_logprobs=true (set)"]
    monkeypatch.setattr(runner, "train_command", lambda config_path, nproc: [
        sys.executable, "-c", f"print({chr(10).join(header)!r}); raise SystemExit(3)"])
    request = BenchRequest(("fsdp2",), ("hf",), Workload(4, 2, 8, 8, steps=1, warmup=0), out=tmp_path, shape="tiny")
    cfg = pairing_config(request, "fsdp2", "hf", tmp_path / "model", tmp_path / "prompts.jsonl")
    result = run_pairing(cfg, request, CPU, num_params=1)
    assert result.settings == {
        "engine.pack_sequences": {"value": True, "source": "auto",
                                  "reason": "CUDA, bf16, flash varlen kernel: no padding is computed"},
        "engine.max_tokens_per_micro_batch": {"value": 53248, "source": "auto", "reason": "61.2 GiB free"},
        "rollout.return_logprobs": {"value": True, "source": "set", "reason": None},
    }
    bench = BenchResult(request, CPU, None, 1, [result])
    assert to_json(bench)["pairings"][0]["settings"] == result.settings
    console = Console(record=True, width=200)
    print_table(bench, console)
    assert ("fsdp2 x hf ran with engine.pack_sequences=true, engine.max_tokens_per_micro_batch=53248, "
            "rollout.return_logprobs=true (set)") in console.export_text()
