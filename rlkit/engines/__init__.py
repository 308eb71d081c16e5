"""Training engines: FSDP2 and DeepSpeed behind rlkit.engines.base.TrainEngine."""
