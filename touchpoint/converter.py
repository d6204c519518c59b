"""The data converter of every Touchpoint client, worker and replayer: pydantic's JSON, compact.

Payloads are JSON through pydantic (`temporalio.contrib.pydantic`), with two differences from its
`pydantic_data_converter`:

- **Fields at their default are left out** (``exclude_defaults``): the receiver reads them back
  as the same defaults, since every payload is read with its type (each activity, signal,
  update, query and result is typed, `workflows.messages` and `touchpoint.dsl.runtime`). An
  account document with its unset fields, a run's projection, a playbook: a new account's
  history on the enrollment bench went from 11.8 KB to 8.7 KB, which the server stores and the
  worker's payload walks and pydantic handle. A payload read without a type (a bare
  ``handle.result()``) lacks those fields.
- **One pydantic converter per process**: the SDK makes a payload converter for every workflow
  activation and pydantic's starts a new type-adapter cache each time; `PayloadConverter`
  shares one.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import SchemaSerializer, core_schema
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
)

_SERIALIZER = SchemaSerializer(core_schema.any_schema())
_ENCODING = {"encoding": b"json/plain"}


class CompactJSONPayloadConverter(PydanticJSONPlainPayloadConverter):
    """pydantic's ``json/plain`` converter, leaving out fields at their default."""

    def to_payload(self, value: Any) -> Payload | None:
        return Payload(metadata=_ENCODING, data=_SERIALIZER.to_json(value, exclude_defaults=True))


_JSON = CompactJSONPayloadConverter()
"""One for the process: it holds no state but its (thread-safe, bounded) type-adapter cache."""


class PayloadConverter(CompositePayloadConverter):
    """The SDK's default encodings with pydantic's JSON, sharing `_JSON`."""

    def __init__(self) -> None:
        super().__init__(
            *(_JSON if isinstance(c, JSONPlainPayloadConverter) else c for c in DefaultPayloadConverter.default_encoding_payload_converters)
        )


DATA_CONVERTER = DataConverter(payload_converter_class=PayloadConverter)
"""Pass as ``data_converter`` to `Client.connect` and `Replayer`."""
