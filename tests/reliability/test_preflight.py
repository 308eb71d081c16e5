"""Every named component resolves before the first rollout: `rlkit validate` reports a misspelt policy loss, a
missing plugin file or a data_source without a reward, and `rlkit train` stops on them before any model
loads, leaving no output folder (the catalogue, test_bad_input_catalogue.py, has the train side's messages)."""

import pytest

DATA = '{"prompt": "repeat the letter a", "answer": "a", "data_source": "my_task"}\n'


@pytest.fixture
def config_dir(tmp_path):
    (tmp_path / "my_task.jsonl").write_text(DATA * 8)
    (tmp_path / "losses.py").write_text("from rlkit.algorithms.policy_losses import ppo_loss as loss\n")
    return tmp_path


def write(directory, name, text):
    path = directory / name
    path.write_text(text)
    return path


def test_validate_resolves_every_named_component(invoke, config_dir):
    d = config_dir
    cases = {
        "typo_loss.yaml": ("algorithm:\n  policy_loss: ppoo\n",
                           "algorithm.policy_loss=ppoo: unknown policy loss 'ppoo'. Did you mean 'ppo'?"),
        "missing_plugin.yaml": (f"algorithm:\n  policy_loss: {d / 'gone.py'}:loss\n", "gone.py does not exist"),
        "unknown_source.yaml": (f"data:\n  train_files: [{d / 'my_task.jsonl'}]\n",
                                f"data.train_files: {d / 'my_task.jsonl'} line 1 has data_source 'my_task', which "
                                "reward.name=auto cannot score"),
        "bad_per_source.yaml": ("reward:\n  per_data_source: {letters: nope}\n",
                                "reward.per_data_source.letters: unknown reward 'nope'"),
        "bad_kwarg.yaml": ("reward:\n  kwargs: {weigth: 2}\n", "reward.kwargs weigth are accepted by no reward"),
    }
    paths = {name: write(d, name, text) for name, (text, _) in cases.items()}
    result = invoke("validate", *paths.values())
    assert result.exit_code == 2, result.output
    for name, (_, message) in cases.items():
        line = next(line for line in result.output.splitlines() if str(paths[name]) in line)
        assert line.startswith("FAIL") and message in line, line


def test_validate_passes_good_configs_and_says_what_it_could_not_read(invoke, config_dir):
    d = config_dir
    good = write(d, "good.yaml", f"algorithm:\n  policy_loss: {d / 'losses.py'}:loss\n"
                                 f"data:\n  train_files: [{d / 'my_task.jsonl'}]\nreward:\n  name: letters\n")
    elsewhere = write(d, "elsewhere.yaml", "data:\n  train_files: [../shared/data/gsm8k/train.parquet]\n")
    result = invoke("validate", good, elsewhere)
    assert result.exit_code == 0, result.output
    assert f"OK    {good}\n" in result.output
    not_here = "(not here, data sources not checked: ../shared/data/gsm8k/train.parquet)"
    assert f"OK    {elsewhere}  {not_here}" in result.output


def test_train_stops_before_any_model_loads(small_run, invoke, config_dir, tmp_path, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("rlkit.trainer.components.build_engine", no_model)
    monkeypatch.setattr("rlkit.models.loading.load_causal_lm", no_model)
    for mistake in ("algorithm.policy_loss=ppoo", f"data.train_files=[{config_dir / 'my_task.jsonl'}]"):
        result = invoke("train", *small_run(tmp_path / "new" / "run", mistake))
        assert result.exit_code == 2 and "a model was loaded" not in result.output, result.output
        assert not (tmp_path / "new").exists()
