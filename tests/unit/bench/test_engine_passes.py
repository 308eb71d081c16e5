"""benchmarks/engine_passes.py on CPU: both engines time their passes on the tiny model, settings parse as
`rlkit train` overrides do, and a bad setting costs only its own row."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

SCRIPT = REPO / "benchmarks" / "engine_passes.py"


def load_script():
    spec = importlib.util.spec_from_file_location("engine_passes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_parse_values_as_yaml():
    parse = load_script().parse_setting
    assert parse("base:") == ("base", ())
    assert parse("z2:deepspeed.zero_stage=2,entropy_grad=true,logprob_chunk_size=null") == (
        "z2", (("deepspeed.zero_stage", 2), ("entropy_grad", True), ("logprob_chunk_size", None)))
    with pytest.raises(Exception, match="key.path=value"):
        parse("broken:zero_stage")


@pytest.mark.parametrize("engine", ["fsdp2", "deepspeed"])
def test_each_engine_times_its_passes_on_cpu(engine, tmp_path):
    if engine == "deepspeed":
        pytest.importorskip("deepspeed")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, str(SCRIPT), "--engine", engine, "--shape", "tiny", "--seqs", "4",
               "--prompt-len", "8", "--response-len", "8", "--repeats", "1", "--out", str(tmp_path),
               "--setting", "base:", "--setting", "mb2:micro_batch_size=2,entropy_grad=true",
               "--setting", "bad:no_such_field=1"]
    if engine == "deepspeed":  # DeepSpeed's own defaults, per-submodule hooks: what rlkit's settings replace
        command += ["--setting", "zero3_stock:ds.stage3_param_persistence_threshold=100000,leaf_layers=false"]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    results = {row["setting"]: row for row in json.loads((Path(tmp_path) / "passes.json").read_text())["results"]}
    for name in ("base", "mb2"):
        assert results[name]["engine"] == engine and results[name]["logprob_s"] > 0 and results[name]["update_s"] > 0
    assert results["mb2"]["micro_batch_size"] == 2 and results["mb2"]["entropy_grad"] is True
    assert "no_such_field" in results["bad"]["error"]
    if engine == "deepspeed":
        stock = results["zero3_stock"]
        assert stock["update_s"] > 0 and stock["fields"] == {"ds.stage3_param_persistence_threshold": 100000,
                                                             "leaf_layers": False}
