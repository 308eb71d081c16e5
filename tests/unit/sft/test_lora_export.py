"""`rlkit export --merge-lora`: the merged Hugging Face folder reproduces the adapter model's logits."""

import pytest
import torch
from click.testing import CliRunner
from peft import PeftModel
from sft_runs import LORA, run, sft_config
from transformers import AutoModelForCausalLM

from rlkit.cli.main import cli
from rlkit.distributed import DistInfo


@pytest.mark.parametrize("trained_in_full", [[], ["lm_head"]])
def test_merged_export_reproduces_the_adapter_model(tiny_model_dir, tmp_path, trained_in_full):
    run(sft_config(tiny_model_dir, tmp_path / "run", *LORA, "trainer.total_steps=6",
                   f"model.lora.modules_to_save=[{','.join(trained_in_full)}]"), DistInfo())
    runner = CliRunner()
    refused = runner.invoke(cli, ["export", str(tmp_path / "run"), str(tmp_path / "plain")])
    assert refused.exit_code == 2 and "--merge-lora" in refused.output
    result = runner.invoke(cli, ["export", "--merge-lora", str(tmp_path / "run"), str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapted = PeftModel.from_pretrained(base, tmp_path / "hf" / "adapter").eval()
    input_ids = torch.tensor([[5, 17, 42, 8, 99, 23, 64, 3]])
    with torch.no_grad():
        merged_logits = merged(input_ids).logits
        adapter_logits = adapted(input_ids).logits
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-5), (merged_logits - adapter_logits).abs().max()
    with adapted.disable_adapter(), torch.no_grad():
        assert not torch.allclose(adapted(input_ids).logits, adapter_logits, atol=1e-4)  # the adapters trained
