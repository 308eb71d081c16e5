"""`rlkit bench --data`: a dataset's prompts, responses ending at EOS; and the "vLLM alone" rows, whose child
process runs here against a stand-in `vllm` package (put first on its PYTHONPATH) that records what it is
asked and answers with fixed-length samples."""

import json
import os
import textwrap

import pytest
from click.testing import CliRunner

from rlkit.bench import runner, vllm_alone
from rlkit.bench.runner import BenchRequest, BenchResult, Machine, PairingResult, pairing_config
from rlkit.bench.vllm_alone import BaselineResult, run_baseline, summarize
from rlkit.bench.workload import Workload
from rlkit.data.gsm8k import convert_gsm8k
from rlkit.errors import ConfigError

CPU = Machine(gpu=None, num_gpus=0, cpu="test cpu", num_cpu_cores=2)
NUM_ROWS = 12


@pytest.fixture(autouse=True)
def single_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="module")
def gsm8k_parquet(tmp_path_factory):
    """GSM8K-shaped rows through `rlkit data gsm8k`: verl parquet with data_source openai/gsm8k."""
    source = tmp_path_factory.mktemp("gsm8k_jsonl")
    rows = [{"question": f"Tom has {i} apples and buys {i + 1} more. How many apples does he have?",
             "answer": f"{i} + {i + 1} = {2 * i + 1}\n#### {2 * i + 1}"} for i in range(NUM_ROWS)]
    (source / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (_, path), = convert_gsm8k(source, tmp_path_factory.mktemp("gsm8k")).values()
    return path


def test_data_mode_runs_the_files_prompts_to_eos_and_lists_vllm_alone_as_skipped(tmp_path, monkeypatch,
                                                                                  gsm8k_parquet):
    from rlkit.cli.bench import bench_command
    from rlkit.cli.main import cli

    cli.add_command(bench_command)
    monkeypatch.setattr(runner, "probe_machine", lambda: CPU)
    out = tmp_path / "bench"
    result = CliRunner().invoke(cli, [
        "bench", "--shape", "tiny", "--data", str(gsm8k_parquet), "--engine", "fsdp2", "--rollout", "hf",
        "--steps", "1", "--warmup", "1", "--prompts", "2", "--n", "2", "--response-len", "8", "--out", str(out),
        "trainer.device=cpu",
    ])
    assert result.exit_code == 0, result.output
    assert "skipped vllm alone: " in result.output and "CUDA" in result.output

    report = json.loads((out / "bench.json").read_text())
    assert report["workload"]["data"] == str(gsm8k_parquet) and f"--data {gsm8k_parquet}" in report["command"]
    (ran,) = report["pairings"]
    assert ran["status"] == "ok" and ran["step_over_vllm_alone"] is None
    assert [b["status"] for b in report["vllm_alone"]] == ["skipped", "skipped"]
    assert not (out / "prompts.jsonl").exists()  # no synthetic prompts: the file's own

    run = out / "runs" / "fsdp2-hf"
    import yaml

    config = yaml.safe_load((run / "bench_config.yaml").read_text())
    assert config["data"]["train_files"] == [str(gsm8k_parquet)]
    assert config["data"]["max_train_samples"] == 2 * 2  # prompts x (warm-up + measured steps)
    assert config["rollout"]["ignore_eos"] is False and config["reward"]["name"] == "auto"  # GSM8K's reward
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [1, 2]
    assert all(1 <= record["response_length/mean"] <= 8 for record in records)


def test_a_missing_data_file_is_one_clear_error(tmp_path):
    request = BenchRequest(("fsdp2",), ("hf",), Workload(2, 2, 64, 8, 1, 0, data_file=tmp_path / "nope.parquet"),
                           out=tmp_path, shape="tiny")
    with pytest.raises(ConfigError, match="--data .*nope.parquet does not exist"):
        runner.run_bench(request)


# -- vLLM alone ------------------------------------------------------------------------------------------
FAKE_VLLM = textwrap.dedent('''
    """A stand-in for vllm: records the engine's and each call's arguments, answers with max_tokens tokens."""
    import json, os
    from types import SimpleNamespace

    RECORD = os.environ["FAKE_VLLM_RECORD"]

    def _record(entry):
        with open(RECORD, "a") as handle:
            handle.write(json.dumps(entry) + "\\n")

    def TokensPrompt(prompt_token_ids):
        return {"prompt_token_ids": list(prompt_token_ids)}

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LLM:
        def __init__(self, **kwargs):
            _record({"engine": kwargs, "env": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")})

        def generate(self, requests, params, use_tqdm=True):
            _record({"prompts": [r["prompt_token_ids"] for r in requests], "sampling": params.kwargs})
            sample = SimpleNamespace(token_ids=[7] * params.kwargs["max_tokens"])
            return [SimpleNamespace(outputs=[sample] * params.kwargs["n"]) for _ in requests]
''')


def test_vllm_alone_generates_each_steps_prompts_as_the_trainer_takes_them(tmp_path, monkeypatch, gsm8k_parquet):
    fake = tmp_path / "fake_site" / "vllm"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(FAKE_VLLM)
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(record))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")])))

    workload = Workload(num_prompts=3, n=2, prompt_len=1024, response_len=5, steps=2, warmup=1,
                        data_file=gsm8k_parquet)
    request = BenchRequest(("fsdp2",), ("vllm",), workload, out=tmp_path / "bench", shape="tiny",
                           overrides=("rollout.vllm.gpu_memory_utilization=0.3",))
    from rlkit.bench.workload import ensure_model

    model = ensure_model("tiny", tmp_path / "cache")
    cfg = pairing_config(request, "fsdp2", "vllm", model, gsm8k_parquet)
    results = run_baseline(cfg, workload, tmp_path / "bench" / "vllm_alone")

    assert [(r.name, r.logprobs, r.status, r.num_steps) for r in results] == [
        ("vllm alone", False, "ok", 2), ("vllm alone, logprobs=0", True, "ok", 2)]
    assert all(r.generate_s > 0 and r.tokens_per_s > 0 for r in results)
    engine, *calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert engine["env"] == "0"  # an in-process engine, as rlkit's rollout runs it
    assert engine["engine"]["gpu_memory_utilization"] == 0.3 and engine["engine"]["enable_sleep_mode"] is False
    assert engine["engine"]["model"] == str(model) and engine["engine"]["seed"] == cfg.trainer.seed

    # three steps (one warm-up) per variant, each the next three prompts of the file, in file order
    from rlkit.data import load_prompt_dataset
    from rlkit.models.loading import load_tokenizer

    data = load_prompt_dataset(cfg.data.train_files, cfg.data, load_tokenizer(str(model)))
    expected = [[data[i].prompt_ids for i in range(3 * step, 3 * step + 3)] for step in range(3)]
    assert [call["prompts"] for call in calls] == expected * 2
    sampling = calls[0]["sampling"]
    assert ((sampling["n"], sampling["max_tokens"], sampling["temperature"], sampling["ignore_eos"])
            == (2, 5, 1.0, False))
    assert [call["sampling"]["logprobs"] for call in calls] == [None] * 3 + [0] * 3
    assert "detokenize" not in sampling and "flat_logprobs" not in calls[-1]["sampling"]  # vLLM's own defaults


def test_vllm_alone_reports_a_failed_child_with_its_log(tmp_path, monkeypatch, gsm8k_parquet):
    fake = tmp_path / "fake_site" / "vllm"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no CUDA runtime here')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")])))
    workload = Workload(2, 2, 1024, 4, steps=1, warmup=0, data_file=gsm8k_parquet)
    request = BenchRequest(("fsdp2",), ("hf",), workload, out=tmp_path, shape="tiny")
    from rlkit.bench.workload import ensure_model

    cfg = pairing_config(request, "fsdp2", "hf", ensure_model("tiny", tmp_path / "cache"), gsm8k_parquet)
    results = run_baseline(cfg, workload, tmp_path / "vllm_alone")
    assert [r.status for r in results] == ["failed", "failed"]
    assert "no CUDA runtime here" in results[0].reason and "vllm_alone.log" in results[0].reason


def test_summarize_takes_medians_after_the_warmup():
    # step 0 is the warm-up; then 10 tokens in 1 s, 30 in 2 s, 20 in 4 s: median 2 s and 10 tokens/s
    assert summarize([9.0, 1.0, 2.0, 4.0], [1, 10, 30, 20], warmup=1) == (2.0, 10.0, 3)


def test_skip_reasons():
    assert "CUDA GPU" in vllm_alone.skip_reason(cuda=False)


def test_the_table_shows_each_step_as_a_multiple_of_vllm_alone(tmp_path):
    from rich.console import Console

    from rlkit.bench.report import print_table, to_json

    request = BenchRequest(("fsdp2",), ("vllm",), Workload(4, 2, 8, 8, steps=1, warmup=0), out=tmp_path, shape="tiny")
    ran = PairingResult("fsdp2", "vllm", "ok", phases={"generate": 2.5, "update": 2.0}, step_s=5.0)
    baselines = [BaselineResult("vllm alone", False, "ok", generate_s=2.0, tokens_per_s=100.0, num_steps=1),
                 BaselineResult("vllm alone, logprobs=0", True, "ok", generate_s=4.0, tokens_per_s=50.0, num_steps=1)]
    result = BenchResult(request, CPU, None, 1, [ran], baselines)
    console = Console(record=True, width=220)
    print_table(result, console)
    text = console.export_text()
    row = next(line for line in text.splitlines() if "fsdp2 x vllm" in line)
    assert "step / vLLM" in text and "2.50x" in row and "1.25x" in row  # 5.0 / 2.0 and 2.5 / 2.0
    assert "2.00x" in next(line for line in text.splitlines() if "logprobs=0" in line)  # 4.0 / 2.0
    report = to_json(result)
    assert report["pairings"][0]["step_over_vllm_alone"] == 2.5
    assert report["pairings"][0]["generate_over_vllm_alone"] == 1.25
    assert [b["generate_s"] for b in report["vllm_alone"]] == [2.0, 4.0]
