"""Run a 2-step training for each estimator in one torchrun launch (process start-up dominates)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for helpers

from helpers import small_run  # noqa: E402
from rlkit.config import RunConfig, build_config  # noqa: E402
from rlkit.distributed import destroy, init_distributed  # noqa: E402
from rlkit.trainer.rl import RLTrainer  # noqa: E402

tiny_model, root, estimators = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(",")
dist = init_distributed("cpu")
for estimator in estimators:
    cfg = build_config(RunConfig, None, small_run(tiny_model, root / estimator, f"algorithm.adv_estimator={estimator}"))
    RLTrainer(cfg, dist).fit()
destroy()
