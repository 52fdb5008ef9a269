"""Request validation: a request's inputs and requested outputs checked against a model's
config, and inputs reshaped as the config's ``reshape`` says, before any backend sees them.

Values too, where the config declares what they mean (``ValueChecks``), so that a request the
model cannot mean is refused on its own, with a 400 naming the input and the value, before it
joins a batch (where the backend would fail the others' requests with it). Config parameters:

- ``token_id_inputs``: integer inputs holding token ids (e.g. "input_ids"): each id >= 0, and
  below ``vocab_size`` when that is set;
- ``max_sequence_length``: those inputs hold at most this many tokens (their last axis);
- ``text_inputs``: BYTES inputs holding text (e.g. "text"): each element valid UTF-8. The
  tokenizer backend declares its ``text`` input so at load.

Shared by the data plane, the ensemble platform (for each step) and in-process models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from accelserve.config import count_parameter
from accelserve.errors import ConfigError, InvalidArgumentError
from accelserve.protocol.model_config_pb2 import DataType
from accelserve.types import CONFIG_TO_V2, InferRequest, TensorSpec, v2_datatype

if TYPE_CHECKING:
    from accelserve.model import ModelVersion


def prepare_inputs(model: ModelVersion, request: InferRequest) -> None:
    """Check a request against the model's config and reshape inputs for the backend.

    Raises ``InvalidArgumentError`` naming the model, the input and the expected and received
    values."""
    inputs = request.inputs
    specs = model.inputs
    for name in inputs:
        if name not in specs:
            raise InvalidArgumentError(
                f"model '{model.name}': unexpected input '{name}'; the model's inputs are "
                f"{', '.join(specs)}"
            )
    max_batch = model.config.max_batch_size
    batch = -1
    for spec in specs.values():
        array = inputs.get(spec.name)
        if array is None:
            if spec.optional:
                continue
            raise InvalidArgumentError(
                f"model '{model.name}': input '{spec.name}' is missing; expected inputs "
                f"{', '.join(s.name for s in specs.values() if not s.optional)}"
            )
        datatype = v2_datatype(array.dtype)
        if datatype != spec.datatype:
            raise InvalidArgumentError(
                f"model '{model.name}' input '{spec.name}' datatype: expected {spec.datatype}; "
                f"received {datatype}"
            )
        shape = array.shape
        if max_batch > 0:
            if len(shape) != len(spec.dims) + 1 or not _fits(shape[1:], spec.dims):
                raise InvalidArgumentError(
                    f"model '{model.name}' input '{spec.name}' shape: expected "
                    f"{[-1, *spec.dims]}; received {list(shape)}"
                )
            rows = shape[0]
            if rows < 1 or rows > max_batch:
                raise InvalidArgumentError(
                    f"model '{model.name}' input '{spec.name}': batch size {rows} is outside "
                    f"1..{max_batch} (max_batch_size)"
                )
            if batch not in (-1, rows):
                raise InvalidArgumentError(
                    f"model '{model.name}' input '{spec.name}': batch size {rows} differs from "
                    f"the other inputs' batch size {batch}"
                )
            batch = rows
        elif not _fits(shape, spec.dims):
            raise InvalidArgumentError(
                f"model '{model.name}' input '{spec.name}' shape: expected {list(spec.dims)}; "
                f"received {list(shape)}"
            )
        if spec.reshape is not None:
            inputs[spec.name] = _reshape(array, spec, max_batch > 0)
    if model.checks.active:
        model.checks.check(model.name, inputs)
    for name in request.outputs:
        if name not in model.outputs:
            raise InvalidArgumentError(
                f"model '{model.name}': unknown output '{name}' requested; the model's outputs "
                f"are {', '.join(model.outputs)}"
            )


def _fits(shape: tuple[int, ...], dims: tuple[int, ...]) -> bool:
    if shape == dims:
        return True
    if len(shape) != len(dims):
        return False
    return all(d == -1 or d == s for s, d in zip(shape, dims, strict=True))


def _reshape(array: np.ndarray, spec: TensorSpec, batched: bool) -> np.ndarray:
    assert spec.reshape is not None
    target = (array.shape[0], *spec.reshape) if batched else spec.reshape
    return array.reshape(target)


_INTEGER_TYPES = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")


@dataclass(frozen=True, slots=True)
class ValueChecks:
    """What a model's config declares about its inputs' values (see the module doc)."""

    token_inputs: tuple[str, ...] = ()
    vocab_size: int = 0  # 0: ids are only checked to be >= 0
    max_length: int = 0  # 0: any number of tokens
    text_inputs: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.token_inputs or self.text_inputs)

    def check(self, model: str, inputs: dict[str, np.ndarray]) -> None:
        """Raise ``InvalidArgumentError`` naming the input and the first bad value."""
        for name in self.token_inputs:
            array = inputs.get(name)
            if array is not None and array.size:
                self._check_ids(model, name, array)
        for name in self.text_inputs:
            array = inputs.get(name)
            if array is not None:
                _check_text(model, name, array)

    def _check_ids(self, model: str, name: str, array: np.ndarray) -> None:
        tokens = array.shape[-1] if array.ndim else 1
        if self.max_length and tokens > self.max_length:
            raise InvalidArgumentError(
                f"model '{model}' input '{name}': {tokens} tokens; expected at most "
                f"{self.max_length} (the model's max_sequence_length)"
            )
        low, high = int(array.min()), int(array.max())
        vocab = self.vocab_size
        if low >= 0 and (not vocab or high < vocab):
            return
        bad = low if low < 0 else high
        at = [int(i) for i in np.argwhere(array == bad)[0]]
        allowed = f"0..{vocab - 1} (the model's vocabulary)" if vocab else ">= 0"
        raise InvalidArgumentError(
            f"model '{model}' input '{name}': token id {bad} at {at} is out of range; expected "
            f"token ids {allowed}"
        )


def _check_text(model: str, name: str, array: np.ndarray) -> None:
    for index, value in enumerate(array.reshape(-1)):
        if isinstance(value, bytes | bytearray):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidArgumentError(
                    f"model '{model}' input '{name}': element {index} is not UTF-8 text: byte "
                    f"0x{value[exc.start]:02x} at byte offset {exc.start} ({exc.reason}); "
                    "expected UTF-8"
                ) from None
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidArgumentError(
                    f"model '{model}' input '{name}': element {index} is not UTF-8 text: "
                    f"character {value[exc.start]!r} at offset {exc.start} ({exc.reason})"
                ) from None


def value_checks(config: Any) -> ValueChecks:
    """The value checks a ``ModelConfig`` declares; ``ConfigError`` when a parameter is not a
    number or names an input the model lacks or of the wrong type."""
    params = {k: v.string_value for k, v in config.parameters.items()}
    where = f"model '{config.name}'"
    types = {i.name: _config_type(i.data_type) for i in config.input}
    names: dict[str, tuple[str, ...]] = {}
    for key, allowed in (("token_id_inputs", _INTEGER_TYPES), ("text_inputs", ("BYTES",))):
        names[key] = tuple(n.strip() for n in params.get(key, "").split(",") if n.strip())
        for name in names[key]:
            if types.get(name) not in allowed:
                got = f"'{name}' is {types[name]}" if name in types else f"it has no '{name}'"
                raise ConfigError(
                    f"{where} parameter '{key}': expected {' or '.join(allowed)} inputs of the "
                    f"model; {got}"
                )
    if names["token_id_inputs"]:
        vocab = count_parameter(where, "vocab_size", params.get("vocab_size"))
        longest = count_parameter(where, "max_sequence_length", params.get("max_sequence_length"))
    else:
        vocab = longest = 0  # vocab_size alone (as the tokenizer states it) checks nothing
    return ValueChecks(names["token_id_inputs"], vocab, longest, names["text_inputs"])


def _config_type(data_type: int) -> str:
    return CONFIG_TO_V2.get(DataType.Name(data_type), "")
