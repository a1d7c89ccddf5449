"""Tiny models built at test time: nothing is downloaded from a hub or the internet."""

from __future__ import annotations

from pathlib import Path

import joblib

from tests.serving.faulty import FaultyClassifier

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "ran",
    "fast",
    "slow",
    "big",
    "small",
    "red",
    "blue",
    "is",
    "was",
]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "</s>"]
VOCAB = {token: index for index, token in enumerate(SPECIALS + WORDS)}
PAD_ID, EOS_ID = VOCAB["[PAD]"], VOCAB["</s>"]
NUM_LABELS = 3


def iris_model(model_dir: Path) -> Path:
    """A logistic regression on iris (wrapped to fail on a sentinel), as ``model.joblib``."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    fitted = LogisticRegression(max_iter=500).fit(features, labels)
    joblib.dump(FaultyClassifier(fitted), model_dir / "model.joblib")
    return model_dir


def _tokenizer() -> object:
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    backend = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        eos_token="</s>",
    )


def _bert_config(**extra: object) -> object:
    import transformers

    return transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        **extra,
    )


def huggingface_model(task: str, model_dir: Path) -> Path:
    """A randomly initialised tiny model for ``task``, saved as safetensors with a tokenizer."""
    import torch
    import transformers

    torch.manual_seed(0)
    if task == "sequence_classification":
        model = transformers.BertForSequenceClassification(_bert_config(num_labels=NUM_LABELS))
    elif task == "token_classification":
        model = transformers.BertForTokenClassification(_bert_config(num_labels=NUM_LABELS))
    elif task == "fill_mask":
        model = transformers.BertForMaskedLM(_bert_config())
    elif task == "text_generation":
        config = transformers.GPT2Config(
            vocab_size=len(VOCAB),
            n_embd=16,
            n_layer=1,
            n_head=2,
            n_positions=64,
            bos_token_id=EOS_ID,
            eos_token_id=EOS_ID,
            pad_token_id=PAD_ID,
        )
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.T5Config(
            vocab_size=len(VOCAB),
            d_model=16,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            decoder_start_token_id=PAD_ID,
            eos_token_id=EOS_ID,
            pad_token_id=PAD_ID,
        )
        model = transformers.T5ForConditionalGeneration(config)
    model.save_pretrained(model_dir, safe_serialization=True)
    _tokenizer().save_pretrained(model_dir)  # type: ignore[attr-defined]
    return model_dir


def savedmodel(model_dir: Path) -> Path:
    """A TensorFlow SavedModel: ``scores = x @ ones(4, 3)`` on inputs ``x`` of shape [N, 4]."""
    import tensorflow as tf

    class Linear(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.kernel = tf.Variable(tf.ones((4, 3)))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"scores": tf.matmul(x, self.kernel)}

    module = Linear()
    tf.saved_model.save(module, str(model_dir), signatures={"serving_default": module.serve})
    return model_dir
