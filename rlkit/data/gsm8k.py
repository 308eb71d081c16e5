"""GSM8K jsonl ({question, answer}) -> verl-schema parquet (`rlkit data gsm8k`).

The answer's last line is ``#### N``; the ground truth is N with thousands separators removed. The
prompt asks for the final answer after "####", which the strict `gsm8k` reward requires.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlkit.data.convert import verl_record
from rlkit.data.records import Row, read_rows, write_parquet
from rlkit.errors import DataError

DATA_SOURCE = "openai/gsm8k"
INSTRUCTION = ' Let\'s think step by step and output the final answer after "####".'
SPLITS = ("train", "test")
GSM8K_KEYS_FIX = "GSM8K rows have 'question' and 'answer'; for other files use `rlkit data convert`"


def gsm8k_final_answer(answer: str, location: str) -> str:
    """The number after ``####`` in a GSM8K solution, commas removed: "... #### 1,200" -> "1200"."""
    if "####" not in answer:
        raise DataError(f"{location}: the answer has no '#### N' final line; is this GSM8K's jsonl?")
    return answer.split("####")[-1].strip().replace(",", "")


def gsm8k_record(row: Row, split: str, index: int) -> dict[str, Any]:
    question = row.require("question", GSM8K_KEYS_FIX)
    answer = row.require("answer", GSM8K_KEYS_FIX)
    return verl_record(
        prompt_text=question + INSTRUCTION,
        ground_truth=gsm8k_final_answer(answer, row.location),
        data_source=DATA_SOURCE,
        extra_info={"split": split, "index": index, "answer": answer, "question": question},
        ability="math",
    )


def convert_gsm8k(input_dir: str | Path, output_dir: str | Path) -> dict[str, tuple[int, Path]]:
    """Convert ``input_dir/{train,test}.jsonl`` (those present) to ``output_dir/<split>.parquet``.

    Returns {split: (rows written, path)}.
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    present = [split for split in SPLITS if (input_dir / f"{split}.jsonl").is_file()]
    if not present:
        raise DataError(f"{input_dir} holds neither train.jsonl nor test.jsonl; point --input at GSM8K's folder")
    written = {}
    for split in present:
        rows = read_rows(input_dir / f"{split}.jsonl")
        if not rows:
            raise DataError(f"{input_dir / f'{split}.jsonl'} has no records")
        records = [gsm8k_record(row, split, index) for index, row in enumerate(rows)]
        written[split] = (len(records), write_parquet(records, output_dir / f"{split}.parquet"))
    return written
