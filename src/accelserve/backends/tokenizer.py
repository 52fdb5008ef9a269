"""Tokenizer backend: UTF-8 text in, token ids out, with the ``tokenizers`` library.

Input ``text`` (BYTES, [batch, 1]). Outputs (those the config declares, INT64):
``input_ids``, ``attention_mask``, ``token_type_ids`` ([batch, tokens], padded to the longest
sentence of the batch) and ``token_count`` ([batch, 1], the sentence's length *before*
truncation, so a frontend can refuse over-long inputs instead of silently cutting them).

The version directory holds ``tokenizer.json`` (``default_model_filename`` overrides). Config
parameters: ``max_length`` (truncation length; default: the file's own truncation setting).
Loading completes the config's parameters with ``max_length``, ``vocab_size`` and ``pad_id``,
so frontends can check pre-tokenized input without loading the tokenizer themselves, and with
``text_inputs`` ("text"), so that text which is not UTF-8 is refused before it is batched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from accelserve.backends.base import Backend
from accelserve.devices import Device
from accelserve.errors import ConfigError, ModelExecutionError
from accelserve.protocol.model_config_pb2 import ModelConfig
from accelserve.types import TensorSpec

OUTPUTS = ("input_ids", "attention_mask", "token_type_ids", "token_count")


class TokenizerBackend(Backend):
    default_filename = "tokenizer.json"

    def load(self, version_dir: Path, config: ModelConfig, device: Device) -> None:
        path = self.model_file(version_dir, config)
        filename = path.name
        try:
            full = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises its own exception type
            raise ConfigError(
                f"model '{config.name}': '{filename}' is not a tokenizers file: {exc}"
            ) from None
        params = {k: v.string_value for k, v in config.parameters.items()}
        file_limit = (full.truncation or {}).get("max_length", 0)
        max_length = _positive(params.get("max_length", str(file_limit or "")), config.name)
        padding = full.padding or {}
        self.pad_id = int(padding.get("pad_id", 0))
        # Two copies, neither padding (rows are padded here, to the longest of the batch): one
        # counts the full length; the other truncates the few sentences that are too long,
        # keeping the special tokens the post-processor adds.
        full.no_truncation()
        full.no_padding()
        truncating = Tokenizer.from_str(full.to_str())
        truncating.enable_truncation(max_length)
        self._full, self._truncating = full, truncating
        self.max_length = max_length
        self.device = device
        self.inputs = [TensorSpec("text", "BYTES", (1,))]
        self.outputs = [
            TensorSpec(name, "INT64", (1,) if name == "token_count" else (-1,)) for name in OUTPUTS
        ]
        self.max_batch_size = -1
        declared = [o.name for o in config.output] or list(OUTPUTS)
        unknown = [n for n in declared if n not in OUTPUTS]
        if unknown:
            raise ConfigError(
                f"model '{config.name}': output '{unknown[0]}' is not one the tokenizer "
                f"produces; expected some of {', '.join(OUTPUTS)}"
            )
        self._wanted = declared
        for key, value in (
            ("max_length", max_length),
            ("vocab_size", full.get_vocab_size(with_added_tokens=True)),
            ("pad_id", self.pad_id),
            ("text_inputs", "text"),  # validation refuses text that is not UTF-8, with a 400
        ):
            if key not in config.parameters:
                config.parameters[key].string_value = str(value)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = inputs.get("text")
        if texts is None:
            raise ModelExecutionError("the tokenizer needs input 'text'")
        sentences = [_text(x) for x in texts.reshape(-1)]
        encodings = self._full.encode_batch(sentences)
        counts = [len(e.ids) for e in encodings]
        limit = self.max_length
        if max(counts, default=0) > limit:
            long = [i for i, c in enumerate(counts) if c > limit]
            cut = self._truncating.encode_batch([sentences[i] for i in long])
            for i, enc in zip(long, cut, strict=True):
                encodings[i] = enc
        width = max((len(e.ids) for e in encodings), default=0)
        out: dict[str, np.ndarray] = {}
        for name in self._wanted:
            if name == "token_count":
                out[name] = np.array(counts, dtype=np.int64).reshape(-1, 1)
                continue
            fill = self.pad_id if name == "input_ids" else 0
            array = np.full((len(encodings), width), fill, dtype=np.int64)
            for row, enc in zip(array, encodings, strict=True):
                values = _FIELDS[name](enc)
                row[: len(values)] = values
            out[name] = array
        return out


_FIELDS = {
    "input_ids": lambda e: e.ids,
    "attention_mask": lambda e: e.attention_mask,
    "token_type_ids": lambda e: e.type_ids,
}


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        # One undecodable request must not fail the batch it shares with others.
        return value.decode("utf-8", errors="replace")
    return str(value)


def _positive(text: str, model: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"model '{model}' parameter 'max_length': expected an integer >= 1 (or a "
            f"truncation length in the tokenizer file); received {text!r}"
        )
    return value
