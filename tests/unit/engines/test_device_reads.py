"""The passes never read the device inside their micro-batch loop (rlkit/engines/passes.py), and move CPU tensors
to a GPU without a stream sync (rlkit.batch.to_device).

A read (a metric's float, a packed layout's lengths computed on the GPU) makes the host wait for the GPU at every
micro-batch, so it cannot queue the next micro-batch while the GPU runs the last one. On CPU the test tags what a
GPU run keeps on the device (the moved micro-batch, the model's weights) and every tensor computed from them, and
counts the reads of tagged tensors: the update, the log-prob pass and the value pass, padded, trimmed, packed and
packed with shared prompts. The metrics are read once, after the loop (`read_metrics`).
"""

import pytest
import torch
from micro_batching_cases import MICRO_BATCH, make_grouped_batch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from rlkit.batch import Batch, to_device
from rlkit.config.schema import AlgorithmConfig
from rlkit.engines import passes
from rlkit.engines.micro_batches import MicroBatching
from rlkit.engines.sequences import PolicyScorer, ValueScorer
from rlkit.engines.varlen_attention import use_varlen_attention
from rlkit.trainer.losses import GlobalCounts, actor_loss_fn

aten = torch.ops.aten
READS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.is_nonzero.default, aten.equal.default}
BATCHINGS = {
    "padded": MicroBatching(),
    "trimmed": MicroBatching(remove_padding=True),
    "packed": MicroBatching(pack_sequences=True),
    "shared prompts": MicroBatching(pack_sequences=True, share_prompts=True),
}


class DeviceReads(TorchDispatchMode):
    """Counts the ops that read a tagged tensor's values on the host; whatever a tagged tensor flows into is
    tagged. Tensors are kept alive while the mode runs, so an id is never reused."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.kept, self.tagged, self.reads, self.moves = [], set(), [], 0
        self.tag(module.parameters())

    def tag(self, tensors) -> None:
        for tensor in tensors:
            self.kept.append(tensor)
            self.tagged.add(id(tensor))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        inputs = [leaf for leaf in tree_leaves((args, kwargs or {})) if isinstance(leaf, torch.Tensor)]
        out = func(*args, **(kwargs or {}))
        if any(id(tensor) in self.tagged for tensor in inputs):
            if func in READS:
                self.reads.append(str(func))
            self.tag(leaf for leaf in tree_leaves(out) if isinstance(leaf, torch.Tensor))
        return out


@pytest.fixture
def device_reads(monkeypatch):
    """DeviceReads over a module, with what Batch.to moves tagged: a move to a GPU copies (on CPU `.to` hands
    back the same tensors, which are the CPU rows the layout is cut from), so here it copies too."""

    def over(module: torch.nn.Module) -> DeviceReads:
        mode = DeviceReads(module)

        def to(batch: Batch, device) -> Batch:
            copies = {name: value.clone() for name, value in batch.tensors.items()}
            mode.tag(copies.values())
            mode.moves += 1
            return Batch(copies, dict(batch.meta))

        monkeypatch.setattr(Batch, "to", to)
        return mode

    return over


def tiny(tiny_model_dir, *, packed: bool, critic: bool = False):
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification

    torch.manual_seed(0)
    if critic:
        model = AutoModelForTokenClassification.from_pretrained(tiny_model_dir, num_labels=1)
        scorer = ValueScorer(model)
    else:
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        scorer = PolicyScorer(model, chunk_size=7, temperature=1.0)
    if packed:
        use_varlen_attention(model)
    return scorer


def batch_for(scorer) -> Batch:
    batch = make_grouped_batch(scorer.model.config.vocab_size)
    batch["old_logprobs"] = -torch.rand(batch["response_mask"].shape)
    batch["ref_logprobs"] = -torch.rand(batch["response_mask"].shape)
    batch["values"] = torch.randn(batch["response_mask"].shape)
    return batch


@pytest.mark.parametrize("batching", BATCHINGS.values(), ids=BATCHINGS.keys())
def test_the_update_reads_nothing_from_the_device_until_its_metrics(tiny_model_dir, device_reads, batching):
    scorer = tiny(tiny_model_dir, packed=batching.pack_sequences)
    batch = batch_for(scorer)
    algorithm = AlgorithmConfig(use_kl_loss=True, old_logprobs_from_update=True, entropy_coeff=0.01)
    loss_fn = actor_loss_fn(algorithm, "token-mean", batch.response_width, GlobalCounts(*GlobalCounts.of_local(batch)))
    with device_reads(scorer) as mode:
        metrics = passes.accumulate_gradients(scorer, batch, loss_fn, torch.device("cpu"),
                                              micro_batch_size=MICRO_BATCH, critic=False,
                                              backward=lambda loss: loss.backward(), batching=batching)
    assert mode.moves >= 4 and mode.reads == []  # 8 rows, at most 2 a micro-batch
    assert {"pg_loss", "pg_clipfrac", "kl_loss", "kl", "entropy", "actor_loss"} <= set(metrics)
    assert all(isinstance(value, float) for value in metrics.values())


@pytest.mark.parametrize("batching", BATCHINGS.values(), ids=BATCHINGS.keys())
def test_the_scoring_passes_read_nothing_from_the_device(tiny_model_dir, device_reads, batching):
    for critic in (False, True):
        scorer = tiny(tiny_model_dir, packed=batching.pack_sequences, critic=critic)
        batch = batch_for(scorer)
        with torch.no_grad(), device_reads(scorer) as mode:
            if critic:
                passes.values_of(scorer, batch, torch.device("cpu"), micro_batch_size=MICRO_BATCH, batching=batching)
            else:
                passes.logprobs_of(scorer, batch, torch.device("cpu"), micro_batch_size=MICRO_BATCH,
                                   with_entropy=True, batching=batching)
        assert mode.reads == [], critic


def test_a_read_in_the_loop_is_counted_at_every_micro_batch(tiny_model_dir, device_reads):
    """The check itself: a loss function that reads its loss as a float is caught at each of the 4 micro-batches,
    and the layout cut on the device rather than from the CPU rows would be too."""
    scorer = tiny(tiny_model_dir, packed=False)
    batch = batch_for(scorer)
    loss_fn = actor_loss_fn(AlgorithmConfig(), "token-mean", batch.response_width,
                            GlobalCounts(*GlobalCounts.of_local(batch)))

    def reading_loss_fn(output, micro):
        loss, metrics = loss_fn(output, micro)
        return loss, {**metrics, "read": float(loss.detach())}

    with device_reads(scorer) as mode:
        passes.accumulate_gradients(scorer, batch, reading_loss_fn, torch.device("cpu"), micro_batch_size=MICRO_BATCH,
                                    critic=False, backward=lambda loss: loss.backward(), batching=MicroBatching())
    assert mode.reads == ["aten._local_scalar_dense.default"] * 4
    with device_reads(scorer) as mode:
        passes.pack(batch.to("cpu"))
    assert "aten.nonzero.default" in mode.reads


def test_a_cpu_tensor_goes_to_a_gpu_pinned_and_without_a_stream_sync(monkeypatch):
    """torch's plain copy of a CPU tensor to a GPU synchronizes the stream after it: to_device copies from pinned
    memory with non_blocking instead, and leaves every other move as it was (on CPU, here with torch's calls
    recorded instead of run)."""
    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin_memory") or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *args, **kwargs: calls.append((args, kwargs)) or self)
    tensor = torch.zeros(3)
    to_device(tensor, "cuda:0")
    assert calls == ["pin_memory", (("cuda:0",), {"non_blocking": True})]
    calls.clear()
    to_device(tensor, torch.device("cpu"))
    assert calls == [((torch.device("cpu"),), {})]

