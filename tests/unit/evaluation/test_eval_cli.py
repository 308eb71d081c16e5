"""`rlkit eval` on the tiny model: the summary agrees with its own per-response file, checkpoints are read like
`rlkit generate` reads them, and bad flags fail before any model loads."""

import json

import pytest
from click.testing import CliRunner

from rlkit.cli.main import cli


def run_eval(*args, exit_code=0):
    """What `rlkit eval ARGS` printed on stdout (errors: on stderr, whose output is returned then)."""
    result = CliRunner().invoke(cli, ["eval", *map(str, args)])
    assert result.exit_code == exit_code, result.output
    return result.stdout if exit_code == 0 else result.output


def test_summary_matches_the_responses_file(tiny_model, tmp_path):
    output = run_eval(tiny_model, "--data", "builtin:letters-val", "--reward", "letters", "--n", 2, "--temperature", 1,
                      "--limit", 5, "--max-new-tokens", 6, "--device", "cpu", "--output", tmp_path / "rows.jsonl",
                      "--summary", tmp_path / "summary.json", "--json")
    printed = json.loads(output.strip().splitlines()[-1])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert printed == summary
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and [(r["prompt_index"], r["sample_index"]) for r in rows[:3]] == [(0, 0), (0, 1), (1, 0)]
    assert {"prompt", "response", "ground_truth", "score", "correct", "acc", "response_length",
            "finish_reason"} <= set(rows[0])
    # recomputed from the rows: accuracy is the mean of `correct` (the letters reward reports acc), pass@2 with
    # two samples is the share of prompts with at least one correct
    assert all(row["correct"] == row["acc"] for row in rows)
    assert summary["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / 10)
    assert summary["reward_mean"] == pytest.approx(sum(r["score"] for r in rows) / 10)
    solved = {r["prompt_index"] for r in rows if r["correct"] == 1.0}
    assert summary["pass_at_k"]["2"] == pytest.approx(len(solved) / 5)
    assert summary["pass_at_k"]["1"] == pytest.approx(summary["accuracy"])
    low, high = summary["accuracy_ci95"]
    assert low <= summary["accuracy"] <= high and summary["accuracy_ci_method"] == "wilson"
    assert summary["response_length_mean"] == pytest.approx(sum(r["response_length"] for r in rows) / 10)
    assert summary["truncation_rate"] == pytest.approx(sum(r["finish_reason"] == "length" for r in rows) / 10)
    assert summary["num_prompts"] == 5 and summary["num_samples"] == 2 and summary["seconds"] > 0


def test_greedy_is_reproducible_and_the_sentence_names_the_numbers(tiny_model):
    args = (tiny_model, "--data", "builtin:letters-val", "--limit", 4, "--max-new-tokens", 6, "--device", "cpu")
    first, second = run_eval(*args), run_eval(*args, "--batch-size", 3)
    line = first.strip().splitlines()[-1]
    assert line.startswith("accuracy ") and "95% CI" in line and "Wilson over 4 prompts" in line and "truncated" in line
    assert line.split(" | ")[:-1] == second.strip().splitlines()[-1].split(" | ")[:-1]  # all but the time


def test_a_checkpoint_is_evaluated_with_its_runs_prompt_settings(tiny_model, tmp_path):
    from rlkit.config.loading import build_config
    from rlkit.config.sft import SFTConfig
    from rlkit.engines.base import DistInfo
    from rlkit.trainer.sft import SFTTrainer

    cfg = build_config(SFTConfig, None, [
        f"model.path={tiny_model}", f"trainer.output_dir={tmp_path / 'run'}", "trainer.total_steps=1",
        "trainer.loggers=[jsonl]", "trainer.progress_bar=false", "data.system_prompt=Answer briefly.",
    ])
    SFTTrainer(cfg, DistInfo()).fit()
    run_eval(tmp_path / "run", "--data", "builtin:letters-val", "--limit", 2, "--max-new-tokens", 4, "--device", "cpu",
             "--output", tmp_path / "rows.jsonl", "--summary", tmp_path / "summary.json")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model"].startswith(f"checkpoint {tmp_path / 'run' / 'checkpoints' / 'step_00000001'}")
    first = json.loads((tmp_path / "rows.jsonl").read_text().splitlines()[0])
    assert first["prompt"].startswith("<|im_start|>system\nAnswer briefly.<|im_end|>")  # the run's data.system_prompt


@pytest.mark.parametrize("args, message", [
    (["--reward", "nope"], "unknown reward 'nope'"),
    (["--rollout", "nope"], "rollout"),
    (["trainer.total_steps=3"], "takes settings of the rollout and reward sections only"),
    (["rollout.temprature=0.5"], "did you mean 'rollout.temperature'"),
    (["--data", "missing.jsonl"], "--data missing.jsonl does not exist"),
])
def test_bad_flags_fail_before_the_model_loads(args, message, tmp_path):
    data = [] if "--data" in args else ["--data", "builtin:letters-val"]
    output = run_eval(tmp_path / "no-model-here", *data, *args, exit_code=2)
    assert output.startswith("error: ") and message in output, output


@pytest.mark.parametrize("command", ["eval", "generate"])
def test_the_reward_worker_ends_with_a_command_that_fails(command, tiny_model, tmp_path, monkeypatch):
    """The one-shot commands close the reward's worker process themselves, also when they fail after scoring
    (the error's traceback keeps their frames, and so the worker, alive until the interpreter exits)."""
    import rlkit.cli.generate
    import rlkit.evaluation.runner
    from rlkit.rewards.worker import RewardWorker

    started = []
    start = RewardWorker._start

    def recording_start(worker):
        start(worker)
        started.append(worker._process)

    def fails(*args, **kwargs):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(RewardWorker, "_start", recording_start)
    monkeypatch.setattr(rlkit.evaluation.runner, "write_responses", fails)
    monkeypatch.setattr(rlkit.cli.generate, "print_completions", fails)
    args = {"eval": ["--data", "builtin:letters-val", "--reward", "letters", "--limit", 2,
                     "--output", tmp_path / "rows.jsonl"],
            "generate": ["--prompt", "Repeat the letter A", "--ground-truth", "A", "--reward", "letters"]}[command]
    result = CliRunner().invoke(cli, [command, tiny_model, *map(str, args), "--max-new-tokens", "4",
                                      "--device", "cpu"])
    assert isinstance(result.exception, RuntimeError), result.output
    assert len(started) == 1 and started[0].poll() is not None  # it scored the responses, and it has exited
