"""A tiny random BERT, a token-sequence data source and a two-task model on them, for head tests."""

from __future__ import annotations

from typing import Any

import torch

from mtl.data.collate import collate
from mtl.data.sources.base import DataSource, TaskSplits
from mtl.data.task_dataset import TaskDataset
from mtl.encoders import HuggingFaceEncoder
from mtl.heads import ClassificationHead
from mtl.module import MultiTaskModule

VOCAB = 40
PAD = 0
# 3 layers x 4 heads of width 4; no dropout, so eval and train forwards agree.
TINY_BERT: dict[str, Any] = {
    "model_type": "bert",
    "hidden_size": 16,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 32,
    "vocab_size": VOCAB,
    "max_position_embeddings": 32,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}


class TokenSource(DataSource):
    """Random token sequences (lengths 3..8) with two tasks that need attention to solve.

    ``first``: is the token after ``[CLS]`` in the upper half of the vocabulary (2 classes);
    ``last``: the last token's id modulo 3 (3 classes).

    Args:
        n: training examples per task; validation and test get ``n // 2``.
        seed: seed of the sequences.
    """

    available_tasks = ("first", "last")

    def __init__(self, n: int = 48, seed: int = 0) -> None:
        self.n, self.seed = n, seed

    def _split(self, size: int, gen: torch.Generator) -> dict[str, TaskDataset]:
        lengths = torch.randint(3, 9, (size,), generator=gen).tolist()
        ids = [
            torch.cat([torch.tensor([1]), torch.randint(2, VOCAB, (k - 1,), generator=gen)]) for k in lengths
        ]
        masks = [torch.ones_like(x) for x in ids]
        inputs = {"input_ids": ids, "attention_mask": masks}
        first = torch.tensor([int(x[1] >= VOCAB // 2) for x in ids])
        last = torch.tensor([int(x[-1]) % 3 for x in ids])
        return {"first": TaskDataset(inputs, first), "last": TaskDataset(inputs, last)}

    def load(self) -> dict[str, TaskSplits]:
        gen = torch.Generator().manual_seed(self.seed)
        train, val, test = (
            self._split(self.n, gen),
            self._split(self.n // 2, gen),
            self._split(self.n // 2, gen),
        )
        return {t: TaskSplits(train[t], val[t], test[t]) for t in self.available_tasks}

    def input_spec(self) -> dict[str, Any]:
        return {"pad_token_id": PAD, "vocab_size": VOCAB}


def tiny_model(seed: int = 0, **encoder_kwargs: Any) -> MultiTaskModule:
    """A random tiny BERT (mean pooling) with heads ``first`` (2 classes) and ``last`` (3 classes)."""
    torch.manual_seed(seed)
    encoder = HuggingFaceEncoder(config=TINY_BERT, **encoder_kwargs)
    heads = {"first": ClassificationHead(num_classes=2), "last": ClassificationHead(num_classes=3)}
    return MultiTaskModule(encoder, heads).eval()


def task_batch(task: str, rows: slice = slice(0, 6), split: str = "train") -> dict[str, Any]:
    """A `mtl.data.collate` batch of ``task``'s examples ``rows`` (padded, so lengths differ)."""
    dataset = getattr(TokenSource().load()[task], split)
    examples = [(task, *dataset[i]) for i in range(len(dataset))[rows]]
    return collate(examples, pad_values={"input_ids": PAD})


def encoder_batch() -> dict[str, torch.Tensor]:
    """Encoder inputs of 3 rows: lengths 5, 8 and 3 (right-padded)."""
    ids = torch.tensor(
        [[1, 11, 12, 13, 14, 0, 0, 0], [1, 21, 22, 23, 24, 25, 26, 27], [1, 31, 32, 0, 0, 0, 0, 0]]
    )
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}
