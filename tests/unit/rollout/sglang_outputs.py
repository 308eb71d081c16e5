"""Fake SGLang output dicts, shaped as SGLang 0.5.17's `Engine.generate` returns them with skip_tokenizer_init=True
and return_logprob=True (imported by test_sglang_args.py and test_sglang_rollout.py):
    {"output_ids": [...], "meta_info": {"finish_reason": {"type": "stop", "matched": 1},
                                        "output_token_logprobs": [(logprob, token_id, None), ...], ...}}
"""


def output(response, logprobs, reason):
    """An SGLang output dict; reason is ("stop", matched_token) or ("length", length)."""
    kind, value = reason
    finish = {"type": "stop", "matched": value} if kind == "stop" else {"type": "length", "length": value}
    return {
        "output_ids": list(response),
        "meta_info": {
            "id": "rid",
            "finish_reason": finish,
            "prompt_tokens": 3,
            "completion_tokens": len(response),
            "output_token_logprobs": [(lp, token, None) for lp, token in zip(logprobs, response)],
        },
    }
