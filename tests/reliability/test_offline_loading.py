"""rlkit never goes online for a model: a hub id already in the local Hugging Face cache loads with no network
request at all, from every loader (tokenizer, models, the HF rollout engine, the weight-shape table, the
rollout-behaviour reference) and through a training run.

The "network" is a local HTTP server standing in for the Hub (HF_ENDPOINT) that counts what reaches it and
answers 500, which huggingface_hub retries; the offline switches (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE) are
unset, as on a user's machine.
"""

import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

HUB_ID = "rlkit-test/tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"

EVERY_LOADER = f"""
import sys
from rlkit.config.rollouts import RolloutConfig
from rlkit.distributed import DistInfo
from rlkit.models.loading import load_causal_lm, load_critic, load_tokenizer
from rlkit.rollout.behaviour import Reference
from rlkit.rollout.hf import HFRollout
from rlkit.rollout.hf_options import HFOptions
from rlkit.rollout.weights import weight_shapes

tokenizer = load_tokenizer("{HUB_ID}")
load_causal_lm("{HUB_ID}")
load_critic("{HUB_ID}")
assert weight_shapes("{HUB_ID}")
HFRollout(RolloutConfig(), HFOptions(), "{HUB_ID}", tokenizer, DistInfo())
Reference("{HUB_ID}", tokenizer, prompts=[]).model
print("loaded")
"""


class CountingHub(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def _refuse(self):
        CountingHub.requests.append(f"{self.command} {self.path}")
        self.send_response(500)
        self.end_headers()

    do_GET = do_HEAD = do_POST = _refuse

    def log_message(self, *args):
        pass


@pytest.fixture
def offline_machine(tmp_path, tiny_model):
    """(env, requests): a Hugging Face cache holding HUB_ID, and a stand-in Hub that counts requests."""
    repo = tmp_path / "hf" / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    shutil.copytree(tiny_model, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CountingHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    CountingHub.requests = []
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_OFFLINE"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}",
               OMP_NUM_THREADS="1")
    yield env, CountingHub.requests
    server.shutdown()


def test_every_loader_reads_a_cached_hub_id_without_a_request(offline_machine):
    env, requests = offline_machine
    result = subprocess.run([sys.executable, "-c", EVERY_LOADER], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert requests == []


def test_a_run_on_a_cached_hub_id_makes_no_request(offline_machine, small_run, tmp_path):
    env, requests = offline_machine
    args = small_run(tmp_path / "run", f"model.path={HUB_ID}", "trainer.total_steps=1", "trainer.test_freq=0",
                     "trainer.val_before_train=false")
    result = subprocess.run([sys.executable, "-m", "rlkit", "train", *args], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert requests == []
    assert (tmp_path / "run" / "checkpoints" / "step_00000001").is_dir()


def test_a_hub_id_not_in_the_cache_is_named_without_a_request(offline_machine, small_run, tmp_path):
    env, requests = offline_machine
    args = small_run(tmp_path / "run", "model.path=rlkit-test/not-cached")
    result = subprocess.run([sys.executable, "-m", "rlkit", "train", *args], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "model.path 'rlkit-test/not-cached' is not a folder, nor in the local Hugging Face cache" in result.stderr
    assert "rlkit never downloads" in result.stderr
    assert requests == [] and not Path(tmp_path / "run").exists()
