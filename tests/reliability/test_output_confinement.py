"""The default run writes only inside trainer.output_dir, and `rlkit export` only its target: nothing in the
working directory, HOME or the temporary directory, except the empty cache directory torch itself creates
there (docs/reliability.md lists it)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

# Variables that would send caches elsewhere than HOME and TMPDIR, which the test points at empty folders.
REDIRECTS = ("XDG_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH_HOME", "TORCHINDUCTOR_", "MPLCONFIGDIR", "TMP",
             "TEMP", "WANDB_")


def listing(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))


def only_torch_caches(tmp: Path) -> bool:
    """torch creates an empty $TMPDIR/torchinductor_<user> when it is imported; nothing else may appear."""
    return all(entry.name.startswith("torchinductor_") and not any(entry.iterdir()) for entry in tmp.iterdir())


def test_default_run_and_export_write_only_where_configured(tmp_path):
    cwd, home, tmp, out = (tmp_path / name for name in ("cwd", "home", "tmp", "out"))
    for directory in (cwd, home, tmp):
        directory.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(REDIRECTS)}
    env.update(HOME=str(home), TMPDIR=str(tmp), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")

    def rlkit(*args):
        result = subprocess.run([sys.executable, "-m", "rlkit", *args], cwd=cwd, env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]

    # The embedded default (builtin:tiny on builtin:letters), one step instead of a hundred.
    rlkit("train", f"trainer.output_dir={out}", "trainer.total_steps=1")
    assert sorted(p.name for p in out.iterdir()) == [".rlkit.lock", "builtin_tiny", "checkpoints", "metrics.jsonl",
                                                     "tensorboard"]
    assert listing(cwd) == [] and listing(home) == [] and only_torch_caches(tmp)

    # Export of a run whose builtin_tiny is gone (a run copied without it): the base is rebuilt in a temporary
    # directory that is removed, and only the target appears.
    shutil.rmtree(out / "builtin_tiny")
    run_files = listing(out)
    rlkit("export", str(out), "exported")
    assert listing(cwd)[:1] == ["exported"] and all(name.startswith("exported") for name in listing(cwd))
    assert (cwd / "exported" / "model.safetensors").is_file()
    assert listing(out) == run_files and listing(home) == [] and only_torch_caches(tmp)
