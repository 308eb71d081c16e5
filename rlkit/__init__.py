"""rlkit: reinforcement-learning post-training for LLMs (PPO-GAE, GRPO, DrGRPO, REINFORCE and kin) and SFT.

Importing rlkit is light: heavy backends (vLLM, SGLang, DeepSpeed) are imported only when selected.
"""

__version__ = "0.1.0"
