"""`rlkit bench`: time a fixed GRPO workload for each training engine x rollout engine pairing.

  shapes    Qwen2.5 architectures (and the tiny model) and their parameter counts
  workload  the fixed run: a model folder, prompts of an exact token length, the run's settings
  runner    one `rlkit train` process per pairing; medians of its metrics after the warm-up
  report    the terminal table, bench.json and the stacked-phase bar chart
"""
