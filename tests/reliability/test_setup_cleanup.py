"""A failed setup removes only what rlkit created; `rlkit export` stages under a fresh name of its own.

The setup fails after "another program" (the patched data loader) wrote into the output directory: its files
stay, rlkit's own (the built-in tiny model, the lock) go.
"""

from pathlib import Path

import pytest

from rlkit.errors import DataError


@pytest.fixture
def others_write_then_setup_fails(monkeypatch):
    """While rlkit loads the data, another program writes into `shared`; then the data turns out bad."""

    def arrange(shared: Path):
        def load(*args, **kwargs):
            shared.mkdir(parents=True, exist_ok=True)
            (shared / "their_results.csv").write_text("a,b\n1,2\n")
            (shared / "their_run").mkdir()
            (shared / "their_run" / "log.txt").write_text("theirs\n")
            raise DataError("data file bad.jsonl line 3 is not valid JSON")

        monkeypatch.setattr("rlkit.trainer.components.load_prompt_dataset", load)

    return arrange


def listing(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*"))


def test_in_an_existing_folder_only_rlkits_entries_go(small_run, invoke, tmp_path, others_write_then_setup_fails):
    shared = tmp_path / "shared"  # trainer.output_dir=. or a shared runs folder
    shared.mkdir()
    (shared / "notes.md").write_text("mine\n")
    others_write_then_setup_fails(shared)
    result = invoke("train", *small_run(shared, "model.path=builtin:tiny"))
    assert result.exit_code == 2 and "bad.jsonl line 3" in result.output, result.output
    assert listing(shared) == ["notes.md", "their_results.csv", "their_run", "their_run/log.txt"]


def test_a_new_folder_goes_unless_someone_else_wrote_into_it(small_run, invoke, tmp_path,
                                                             others_write_then_setup_fails):
    out = tmp_path / "runs" / "new"
    others_write_then_setup_fails(out)
    result = invoke("train", *small_run(out, "model.path=builtin:tiny"))
    assert result.exit_code == 2, result.output
    assert listing(tmp_path / "runs") == ["new", "new/their_results.csv", "new/their_run", "new/their_run/log.txt"]


def test_export_leaves_an_existing_dot_tmp_alone(invoke, finished_run, tmp_path, monkeypatch):
    theirs = tmp_path / ".exported.tmp"
    theirs.mkdir()
    (theirs / "keep.bin").write_bytes(b"someone else's")
    result = invoke("export", finished_run, tmp_path / "exported")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "exported" / "model.safetensors").is_file()
    assert (theirs / "keep.bin").read_bytes() == b"someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".exported.tmp", "exported"]

    def fail(self, directory):
        (Path(directory) / "model.safetensors").write_bytes(b"half")
        raise OSError("simulated failure half-way through the export")

    monkeypatch.setattr("rlkit.engines.fsdp2.engine.FSDP2Engine.export_hf", fail)
    result = invoke("export", finished_run, tmp_path / "again")
    assert result.exit_code != 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".exported.tmp", "exported"]
    assert (theirs / "keep.bin").read_bytes() == b"someone else's"
