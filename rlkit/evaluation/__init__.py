"""Evaluating a policy on a prompt set (`rlkit eval`) and sampling from it (`rlkit generate`): which weights to
load (policy), the prompts and their scores (prompts), the numbers (metrics), the run and its files (runner)."""
