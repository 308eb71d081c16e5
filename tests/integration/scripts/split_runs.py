"""Run several `rlkit train` cases, one after another, in one torchrun launch (process start-up dominates).

    torchrun --nproc_per_node=W split_runs.py CASES.json

CASES.json: {"tiny_model": PATH, "cases": [{"name", "overrides", "rollout_weights"?}, ...]}. Each case runs as
`rlkit train` does (rlkit.placement.init_placement, then the trainer or the rollout worker) with its overrides
after tests/helpers.small_run's; a case that fails is recorded and the next one runs. Each rank writes
{case name: error text or null} to results_rank{RANK}.json beside CASES.json; a rollout rank of a case with
"rollout_weights" saves its engine's weights, as they are when the run ends, to that path.
"""

import json
import sys
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for helpers

from helpers import small_run  # noqa: E402
from rlkit.config import RunConfig, build_config  # noqa: E402
from rlkit.distributed import destroy  # noqa: E402
from rlkit.placement import init_placement  # noqa: E402
from rlkit.trainer.components import build_rollout_worker  # noqa: E402
from rlkit.trainer.rl import RLTrainer  # noqa: E402


def run_case(tiny_model: str, case: dict) -> str | None:
    cfg = build_config(RunConfig, None, small_run(tiny_model, Path(case["output_dir"]), *case["overrides"]))
    placement = init_placement(cfg, "cpu")
    try:
        if placement.is_trainer:
            RLTrainer(cfg, placement.dist, placement).fit()
        else:
            worker = build_rollout_worker(cfg, placement)
            if case.get("rollout_weights") and worker.rollout is not None:
                keep_weights(worker.rollout, case["rollout_weights"])
            worker.run()
    except Exception as error:  # recorded; the next case runs
        return f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
    finally:
        placement.close()
    return None


def keep_weights(rollout, path: str) -> None:
    """Save the engine's weights when the worker closes it, at the end of the run."""
    close = rollout.close

    def save_then_close():
        torch.save({name: tensor.clone() for name, tensor in rollout.model.state_dict().items()}, path)
        close()

    rollout.close = save_then_close


def main() -> None:
    spec_path = Path(sys.argv[1])
    spec = json.loads(spec_path.read_text())
    import os

    rank = int(os.environ["RANK"])  # the job's rank: read before a placement rewrites it
    results = {}
    for case in spec["cases"]:
        results[case["name"]] = run_case(spec["tiny_model"], case)
    (spec_path.parent / f"results_rank{rank}.json").write_text(json.dumps(results, indent=1))
    destroy()


if __name__ == "__main__":
    main()
