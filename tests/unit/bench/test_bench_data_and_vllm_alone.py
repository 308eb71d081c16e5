"""`rlkit bench --data`: a dataset's prompts, responses ending at EOS; and the "vLLM alone" and "SGLang alone"
rows, whose child processes run here against stand-in `vllm` and `sglang` packages (put first on their
PYTHONPATH) that record what they are asked and answer with fixed-length samples."""

import json
import os
import textwrap

import pytest
from click.testing import CliRunner

from rlkit.bench import alone, runner, sglang_alone, vllm_alone
from rlkit.bench.alone import BaselineResult, summarize
from rlkit.bench.machine import Machine
from rlkit.bench.runner import BenchRequest, BenchResult, PairingResult, pairing_config
from rlkit.bench.vllm_alone import run_baseline
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


def stand_in(tmp_path, monkeypatch, package: str, source: str):
    """Put a stand-in `package` first on the children's PYTHONPATH; the file it records its calls in."""
    fake = tmp_path / "fake_site" / package
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(source)
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv(f"FAKE_{package.upper()}_RECORD", str(record))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")])))
    return record


def alone_workload(data_file):
    """3 prompts x 2 samples x 5 tokens, one warm-up step and two measured."""
    return Workload(num_prompts=3, n=2, prompt_len=1024, response_len=5, steps=2, warmup=1, data_file=data_file)


def alone_config(tmp_path, data_file, rollout: str, override: str):
    """The tiny model and the config of the fsdp2 x `rollout` pairing the "alone" rows take their settings from."""
    from rlkit.bench.workload import ensure_model

    request = BenchRequest(("fsdp2",), (rollout,), alone_workload(data_file), out=tmp_path / "bench", shape="tiny",
                           overrides=(override,))
    model = ensure_model("tiny", tmp_path / "cache")
    return model, pairing_config(request, "fsdp2", rollout, model, data_file)


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
    record = stand_in(tmp_path, monkeypatch, "vllm", FAKE_VLLM)

    model, cfg = alone_config(tmp_path, gsm8k_parquet, "vllm", "rollout.vllm.gpu_memory_utilization=0.3")
    results = run_baseline(cfg, alone_workload(gsm8k_parquet), tmp_path / "bench" / "vllm_alone")

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


def test_vllm_alone_before_the_pairings_runs_the_variant_without_log_probs(tmp_path, monkeypatch, gsm8k_parquet):
    record = stand_in(tmp_path, monkeypatch, "vllm", FAKE_VLLM)
    _, cfg = alone_config(tmp_path, gsm8k_parquet, "vllm", "rollout.vllm.gpu_memory_utilization=0.3")
    results = run_baseline(cfg, alone_workload(gsm8k_parquet), tmp_path / "vllm_alone_before", before=True)
    assert [(r.name, r.logprobs, r.status, r.before) for r in results] == [
        ("vllm alone, before the pairings", False, "ok", True)]
    _, *calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert [call["sampling"]["logprobs"] for call in calls] == [None] * 3


def test_the_engines_run_alone_before_and_after_the_pairings(tmp_path, monkeypatch):
    """A machine's speed drifts (a quarter within minutes on one H200): vLLM alone runs on both sides of the
    pairings, with the settings of the run."""
    events = []

    class FakeAlone:
        ROLLOUT, VARIANTS = "vllm", vllm_alone.VARIANTS

        @staticmethod
        def skip_reason(cuda):
            return None

        @staticmethod
        def run_baseline(cfg, workload, out, *, before=False):
            events.append(("alone", before, out.name))
            return [BaselineResult("vllm alone", False, "ok", generate_s=2.0 if before else 3.0, before=before)]

    def fake_pairing(cfg, request, machine, num_params, placement):
        events.append(("pairing", cfg.engine.name, cfg.rollout.name))
        return PairingResult(cfg.engine.name, cfg.rollout.name, "ok", phases={"generate": 2.0}, step_s=5.0)

    monkeypatch.setattr(runner, "probe_machine", lambda: CPU)
    monkeypatch.setattr(alone, "modules", lambda rollouts: [FakeAlone])
    monkeypatch.setattr(runner, "run_pairing", fake_pairing)
    request = BenchRequest(("fsdp2",), ("hf",), Workload(4, 2, 8, 8, steps=1, warmup=0), out=tmp_path, shape="tiny")
    result = runner.run_bench(request)
    assert events == [("alone", True, "vllm_alone_before"), ("pairing", "fsdp2", "hf"),
                      ("alone", False, "vllm_alone")]
    assert result.alone_seconds("vllm") == 2.5 and result.alone_drift("vllm") == (2.0, 3.0)


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
    assert "CUDA GPU" in sglang_alone.skip_reason(cuda=False)


def test_sglang_alone_runs_only_with_an_sglang_pairing():
    def rollouts(*names):
        return [module.ROLLOUT for module in alone.modules(names)]

    assert rollouts("vllm") == ["vllm"] and rollouts("hf") == ["vllm"]
    assert rollouts("vllm", "sglang") == ["vllm", "sglang"] and rollouts("sglang") == ["vllm", "sglang"]


@pytest.mark.parametrize("baseline", [True, False])
def test_without_a_gpu_the_alone_rows_are_listed_as_skipped_unless_switched_off(tmp_path, monkeypatch, baseline):
    monkeypatch.setattr(runner, "probe_machine", lambda: CPU)
    request = BenchRequest(("fsdp2",), ("sglang",), Workload(4, 2, 8, 8, steps=1, warmup=0), out=tmp_path,
                           shape="tiny", baseline=baseline)
    result = runner.run_bench(request)  # the one pairing needs a GPU: nothing runs
    assert [p.status for p in result.pairings] == ["skipped"]
    rows = [(b.rollout, b.name, b.status) for b in result.baselines]
    assert rows == ([("vllm", "vllm alone", "skipped"), ("vllm", "vllm alone, logprobs=0", "skipped"),
                     ("sglang", "sglang alone", "skipped"), ("sglang", "sglang alone, logprobs", "skipped")]
                    if baseline else [])
    assert all("CUDA GPU" in b.reason for b in result.baselines)


FAKE_SGLANG = textwrap.dedent('''
    """A stand-in for sglang: records the engine's and each call's arguments, answers with max_new_tokens ids."""
    import json, os

    RECORD = os.environ["FAKE_SGLANG_RECORD"]

    def _record(entry):
        with open(RECORD, "a") as handle:
            handle.write(json.dumps(entry) + "\\n")

    class Engine:
        def __init__(self, **kwargs):
            _record({"engine": kwargs})

        def generate(self, input_ids, sampling_params, return_logprob=False):
            _record({"input_ids": input_ids, "sampling": sampling_params, "return_logprob": return_logprob})
            return [{"output_ids": [7] * sampling_params["max_new_tokens"], "meta_info": {}} for _ in input_ids]

        def shutdown(self):
            _record({"shutdown": True})
''')


def test_sglang_alone_sends_each_steps_prompts_as_rlkits_rollout_does(tmp_path, monkeypatch, gsm8k_parquet):
    record = stand_in(tmp_path, monkeypatch, "sglang", FAKE_SGLANG)

    model, cfg = alone_config(tmp_path, gsm8k_parquet, "sglang", "rollout.sglang.mem_fraction_static=0.3")
    results = sglang_alone.run_baseline(cfg, alone_workload(gsm8k_parquet), tmp_path / "bench" / "sglang_alone")

    assert [(r.name, r.logprobs, r.status, r.num_steps, r.rollout) for r in results] == [
        ("sglang alone", False, "ok", 2, "sglang"), ("sglang alone, logprobs", True, "ok", 2, "sglang")]
    # 6 sequences of 5 tokens a step
    assert all(r.generate_s > 0 and r.tokens_per_s > 0 for r in results)
    engine, *calls, shutdown = [json.loads(line) for line in record.read_text().splitlines()]
    assert shutdown == {"shutdown": True}
    engine = engine["engine"]
    assert engine["mem_fraction_static"] == 0.3 and engine["enable_memory_saver"] is False
    assert engine["model_path"] == str(model) and engine["random_seed"] == cfg.trainer.seed
    assert engine["skip_tokenizer_init"] is True and engine["sleep_on_idle"] is True  # as rlkit's rollout runs it

    # three steps (one warm-up) per variant; each the next three prompts of the file, each prompt twice in a row
    from rlkit.data import load_prompt_dataset
    from rlkit.models.loading import load_tokenizer

    data = load_prompt_dataset(cfg.data.train_files, cfg.data, load_tokenizer(str(model)))
    expected = [[data[i].prompt_ids for i in range(3 * step, 3 * step + 3) for _ in range(2)] for step in range(3)]
    assert [call["input_ids"] for call in calls] == expected * 2
    assert [call["return_logprob"] for call in calls] == [False] * 3 + [True] * 3
    sampling = calls[0]["sampling"]
    assert (sampling["n"], sampling["max_new_tokens"], sampling["temperature"], sampling["ignore_eos"]) == (1, 5, 1.0,
                                                                                                          False)
    assert sampling["stop_token_ids"], "EOS ends a response, as in rlkit's rollout"


def fsdp2_vllm_report(tmp_path, baselines: list[BaselineResult]) -> tuple[str, dict]:
    """The terminal table and bench.json of one fsdp2 x vllm pairing (generate 2.5 s, step 5.0 s) beside
    `baselines`."""
    from rich.console import Console

    from rlkit.bench.report import print_table, to_json

    request = BenchRequest(("fsdp2",), ("vllm",), Workload(4, 2, 8, 8, steps=1, warmup=0), out=tmp_path, shape="tiny")
    ran = PairingResult("fsdp2", "vllm", "ok", phases={"generate": 2.5, "update": 2.0}, step_s=5.0)
    result = BenchResult(request, CPU, None, 1, [ran], baselines)
    console = Console(record=True, width=220)
    print_table(result, console)
    return console.export_text(), to_json(result)


def test_the_table_shows_each_step_as_a_multiple_of_vllm_alone(tmp_path):
    baselines = [BaselineResult("vllm alone", False, "ok", generate_s=2.0, tokens_per_s=100.0, num_steps=1),
                 BaselineResult("vllm alone, logprobs=0", True, "ok", generate_s=4.0, tokens_per_s=50.0, num_steps=1)]
    text, report = fsdp2_vllm_report(tmp_path, baselines)
    row = next(line for line in text.splitlines() if "fsdp2 x vllm" in line)
    assert "step / vLLM" in text and "2.50x" in row and "1.25x" in row  # 5.0 / 2.0 and 2.5 / 2.0
    assert "2.00x" in next(line for line in text.splitlines() if "logprobs=0" in line)  # 4.0 / 2.0
    assert "own alone" not in text  # only vLLM ran alone: its columns say it all
    assert report["pairings"][0]["step_over_vllm_alone"] == 2.5
    assert report["pairings"][0]["generate_over_vllm_alone"] == 1.25
    assert report["pairings"][0]["generate_over_rollout_alone"] == 1.25
    assert [b["generate_s"] for b in report["vllm_alone"]] == [2.0, 4.0] and report["sglang_alone"] == []
    assert "before the pairings" not in text  # only the run after the pairings: no drift to report


def test_steps_are_compared_with_the_mean_of_vllm_alone_before_and_after_the_pairings(tmp_path):
    baselines = [BaselineResult("vllm alone, before the pairings", False, "ok", generate_s=1.5, tokens_per_s=120.0,
                                num_steps=1, before=True),
                 BaselineResult("vllm alone", False, "ok", generate_s=2.5, tokens_per_s=100.0, num_steps=1),
                 BaselineResult("vllm alone, logprobs=0", True, "ok", generate_s=4.0, tokens_per_s=50.0, num_steps=1)]
    text, report = fsdp2_vllm_report(tmp_path, baselines)
    row = next(line for line in text.splitlines() if "fsdp2 x vllm" in line)
    assert "2.50x" in row and "1.25x" in row  # 5.0 and 2.5 over the mean of 1.5 and 2.5
    assert "vllm alone took 1.5 s a step before the pairings and 2.5 s after (+67%)" in text
    assert report["pairings"][0]["step_over_vllm_alone"] == 2.5
    assert [b["before_the_pairings"] for b in report["vllm_alone"]] == [True, False, False]


def test_an_sglang_pairing_is_also_shown_against_sglang_alone(tmp_path):
    from rich.console import Console

    from rlkit.bench.report import print_table, to_json

    request = BenchRequest(("fsdp2",), ("vllm", "sglang"), Workload(4, 2, 8, 8, steps=1, warmup=0), out=tmp_path,
                           shape="tiny")
    pairings = [PairingResult("fsdp2", "vllm", "ok", phases={"generate": 2.5}, step_s=5.0),
                PairingResult("fsdp2", "sglang", "ok", phases={"generate": 1.8}, step_s=4.0)]
    baselines = [BaselineResult("vllm alone", False, "ok", generate_s=2.0, tokens_per_s=100.0, num_steps=1),
                 BaselineResult("sglang alone", False, "ok", generate_s=1.5, tokens_per_s=150.0, num_steps=1,
                                rollout="sglang"),
                 BaselineResult("sglang alone, logprobs", True, "ok", generate_s=3.0, tokens_per_s=75.0, num_steps=1,
                                rollout="sglang")]
    result = BenchResult(request, CPU, None, 1, pairings, baselines)
    console = Console(record=True, width=240)
    print_table(result, console)
    lines = console.export_text().splitlines()
    assert any("gen / own alone" in line for line in lines)

    def row(name):
        return next(line for line in lines if line.startswith(f"│ {name} "))

    # fsdp2 x sglang: step 4.0 / vLLM's 2.0, generate 1.8 / vLLM's 2.0 and 1.8 / SGLang's 1.5
    assert "2.00x" in row("fsdp2 x sglang") and "0.90x" in row("fsdp2 x sglang") and "1.20x" in row("fsdp2 x sglang")
    assert "1.25x" in row("fsdp2 x vllm")  # generate 2.5 over vLLM alone: its own engine too
    assert "2.00x" in row("sglang alone, logprobs")  # 3.0 over SGLang alone's 1.5
    report = to_json(result)
    vllm_pairing, sglang_pairing = report["pairings"]
    assert vllm_pairing["generate_over_rollout_alone"] == 1.25 and sglang_pairing["generate_over_rollout_alone"] == 1.2
    assert sglang_pairing["generate_over_vllm_alone"] == 0.9
    assert [b["name"] for b in report["sglang_alone"]] == ["sglang alone", "sglang alone, logprobs"]
