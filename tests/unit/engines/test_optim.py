"""AdamW as the engines build it and its learning-rate schedule, worked out by hand."""

import math

import pytest
import torch

from rlkit.config.schema import OptimConfig
from rlkit.engines.deepspeed import state as deepspeed_state
from rlkit.engines.optim import build_optimizer, build_scheduler, lr_multiplier, num_warmup_steps


def test_linear_warmup_then_constant():
    # W = 4: steps 0..3 at 1/4, 2/4, 3/4, 4/4, then 1
    got = [lr_multiplier(s, num_warmup=4, total_steps=10, scheduler="constant", min_lr_ratio=0.0) for s in range(6)]
    assert got == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_decays_to_min_lr_ratio():
    # W = 2, S = 6: decay over 4 steps; step 4 is half way: m + (1 - m) * (1 + cos(pi/2)) / 2 = 0.1 + 0.9 * 0.5
    def multiplier(step):
        return lr_multiplier(step, num_warmup=2, total_steps=6, scheduler="cosine", min_lr_ratio=0.1)

    assert multiplier(0) == 0.5 and multiplier(2) == 1.0
    assert multiplier(4) == pytest.approx(0.55)
    assert multiplier(3) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert multiplier(6) == pytest.approx(0.1) and multiplier(100) == pytest.approx(0.1)


def test_warmup_ratio_overrides_warmup_steps():
    assert num_warmup_steps(OptimConfig(warmup_steps=7, warmup_ratio=0.25), total_steps=20) == 5
    assert num_warmup_steps(OptimConfig(warmup_steps=7), total_steps=20) == 7


def test_scheduler_drives_the_optimizer_lr():
    param = torch.nn.Parameter(torch.zeros(2))
    config = OptimConfig(lr=0.1, warmup_steps=2, weight_decay=0.0)
    optimizer = build_optimizer([param], config)
    scheduler = build_scheduler(optimizer, config, total_steps=5)
    lrs = []
    for _ in range(3):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.05, 0.1, 0.1])


def test_one_step_is_adamw_by_hand():
    # first step, m = (1-b1) g, v = (1-b2) g^2, bias-corrected: m_hat = g, v_hat = g^2, so the step is
    # p <- p (1 - lr wd) - lr g / (|g| + eps)
    config = OptimConfig(lr=0.1, weight_decay=0.5, eps=1e-8)
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    param.grad = torch.tensor([0.5, -4.0, 0.0])
    optimizer = build_optimizer([param], config)
    optimizer.step()
    decayed = torch.tensor([1.0, -2.0, 3.0]) * (1 - 0.1 * 0.5)
    expected = decayed - 0.1 * torch.tensor([0.5, -4.0, 0.0]) / (torch.tensor([0.5, 4.0, 0.0]) + 1e-8)
    torch.testing.assert_close(param.detach(), expected)
    assert optimizer.defaults["fused"] is True


@pytest.mark.parametrize("implementation", ["fused", "foreach"])
def test_adamw_state_created_before_the_first_step_sits_where_torch_puts_it(implementation):
    # The DeepSpeed engine creates AdamW's state ahead of the first step. Fused AdamW's kernel wants the step
    # count on the parameter's device (a CUDA run failed on a CPU one); the other implementations count on the
    # CPU. A meta tensor stands in for a flat partition on the GPU.
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], **{implementation: True})
    step = deepspeed_state._initial_step(optimizer, torch.empty(4, device="meta"))
    assert step.device.type == ("meta" if implementation == "fused" else "cpu")
    assert step.dtype == torch.float32 and step.shape == ()
