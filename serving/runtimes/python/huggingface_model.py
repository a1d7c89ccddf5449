"""Hugging Face tasks on CPU with transformers, from a local directory of safetensors weights.

Weights load with ``use_safetensors=True`` and ``trust_remote_code=False`` from local files
only: a directory whose weights are pickles (``pytorch_model.bin`` ...) is refused at load,
and nothing is fetched from a hub. Outputs follow KServe's Hugging Face server:
sequence_classification -> the class index per text, token_classification -> a class index
per token, fill_mask -> the predicted token(s) per text, the generation tasks -> the text
generated after the prompt (greedy, at most ``max_new_tokens``).

The OpenAI completions routes are not served here: KServe 0.21 builds its OpenAI layer on
vLLM's protocol types, which need the vllm package (a GPU runtime of its own).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferResponse
from kserve.utils.utils import get_predict_response

from serving.runtimes.python.base import RuntimeModel
from serving.runtimes.python.config import Task
from serving.runtimes.python.errors import ModelLoadError
from serving.runtimes.python.tensors import Payload, metadata_tensor, texts

PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
MAX_TEXTS = 64

_MODEL_CLASSES = {
    Task.SEQUENCE_CLASSIFICATION: "AutoModelForSequenceClassification",
    Task.TOKEN_CLASSIFICATION: "AutoModelForTokenClassification",
    Task.FILL_MASK: "AutoModelForMaskedLM",
    Task.TEXT_GENERATION: "AutoModelForCausalLM",
    Task.TEXT2TEXT_GENERATION: "AutoModelForSeq2SeqLM",
}


def check_safetensors_only(model_dir: Path) -> None:
    """Refuse a directory that has no safetensors weights.

    Raises:
        ModelLoadError: no directory, or only pickle-format weights in it.
    """
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    if any(model_dir.glob("*.safetensors")):
        return  # pickle files beside them are never read: use_safetensors=True
    pickles = sorted(p.name for p in model_dir.iterdir() if p.suffix in PICKLE_WEIGHT_SUFFIXES)
    if pickles:
        raise ModelLoadError(
            f"refusing pickle weights {', '.join(pickles)} in {model_dir}: only safetensors "
            "weights are served (save with save_pretrained(..., safe_serialization=True))"
        )
    raise ModelLoadError(f"no *.safetensors weights in {model_dir}")


class HuggingFaceModel(RuntimeModel):
    """One transformers model and its tokenizer for one task."""

    def __init__(self, name: str, model_dir: Path, task: Task, max_new_tokens: int) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.task = task
        self.max_new_tokens = max_new_tokens
        self._tokenizer: Any = None
        self._model: Any = None
        self._max_length = 0

    def load(self) -> bool:
        check_safetensors_only(self.model_dir)
        import transformers

        model_class = getattr(transformers, _MODEL_CLASSES[self.task])
        local = {"local_files_only": True, "trust_remote_code": False}
        try:
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_dir, **local)
            self._model = model_class.from_pretrained(
                self.model_dir, use_safetensors=True, **local
            )
        except (OSError, ValueError, KeyError) as error:
            raise ModelLoadError(f"cannot load {self.task} model: {error}") from error
        self._model.eval()
        if self._tokenizer.pad_token is None and self._tokenizer.eos_token is not None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._max_length = self._input_limit()
        if self.task is Task.TEXT_GENERATION:
            self._tokenizer.padding_side = "left"  # a batch generates after its last tokens
            self._tokenizer.truncation_side = "left"  # a long prompt keeps its end
        self.ready = True
        return self.ready

    def _input_limit(self) -> int:
        """Tokens an input may have: a longer text is truncated instead of failing the model."""
        config = self._model.config
        positions = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None
        )
        limit = min(int(self._tokenizer.model_max_length), int(positions or 1_000_000))
        if self.task is Task.TEXT_GENERATION:  # the generated tokens need positions too
            limit -= self.max_new_tokens
        if limit <= 0:
            raise ModelLoadError(f"max_new_tokens {self.max_new_tokens} leaves no room for input")
        return limit

    async def predict(
        self, payload: Payload, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        batch = texts(payload)
        if len(batch) > MAX_TEXTS:
            raise InvalidInput(f"at most {MAX_TEXTS} texts per request, got {len(batch)}")
        # Off the event loop, so health checks and other requests are answered meanwhile.
        result = await asyncio.to_thread(self._run, batch)
        return get_predict_response(payload, result, self.name)

    def _run(self, batch: list[str]) -> list[Any]:
        import torch

        encoded = self._tokenizer(
            batch, return_tensors="pt", padding=True, truncation=True, max_length=self._max_length
        )
        with torch.inference_mode():
            if self.task in (Task.TEXT_GENERATION, Task.TEXT2TEXT_GENERATION):
                return self._generate(encoded)
            logits = self._model(**encoded).logits
        if self.task is Task.SEQUENCE_CLASSIFICATION:
            return [int(i) for i in logits.argmax(dim=-1).tolist()]
        if self.task is Task.TOKEN_CLASSIFICATION:
            return [list(row) for row in logits.argmax(dim=-1).tolist()]
        return self._fill_masks(encoded["input_ids"], logits)

    def _fill_masks(self, input_ids: Any, logits: Any) -> list[str]:
        mask_id = self._tokenizer.mask_token_id
        if mask_id is None:
            raise InvalidInput("this tokenizer has no mask token")
        filled = []
        for row, (ids, row_logits) in enumerate(zip(input_ids, logits, strict=True)):
            positions = (ids == mask_id).nonzero().flatten()
            if len(positions) == 0:
                raise InvalidInput(f"text {row} has no {self._tokenizer.mask_token} token")
            predicted = row_logits[positions].argmax(dim=-1)
            filled.append(self._tokenizer.decode(predicted).strip())
        return filled

    def _generate(self, encoded: Any) -> list[str]:
        output = self._model.generate(
            **encoded,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=self._tokenizer.pad_token_id,
        )
        if self.task is Task.TEXT_GENERATION:
            output = output[:, encoded["input_ids"].shape[1] :]
        decoded = self._tokenizer.batch_decode(output, skip_special_tokens=True)
        return [str(text) for text in decoded]

    def get_input_types(self) -> list[dict[str, Any]]:
        return [metadata_tensor("text", "BYTES", [-1])]

    def get_output_types(self) -> list[dict[str, Any]]:
        if self.task is Task.SEQUENCE_CLASSIFICATION:
            return [metadata_tensor("output-0", "INT64", [-1])]
        if self.task is Task.TOKEN_CLASSIFICATION:
            return [metadata_tensor("output-0", "INT64", [-1, -1])]
        return [metadata_tensor("output-0", "BYTES", [-1])]
