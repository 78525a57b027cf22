"""Hypothesis strategies for the JSON Schemas of the route table (skuflow.messaging.routes).

Our own, for the few keywords those schemas use: hypothesis-jsonschema 0.23 (its latest release) fails on the
Hypothesis this project needs, and schemathesis keeps its generator internal. Every body drawn is checked
against the schema with `jsonschema` too, so a mistake here fails loudly rather than testing less.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema
from hypothesis import strategies as st

KEYWORDS = {"type", "properties", "required", "additionalProperties", "pattern", "maxLength", "minimum", "maximum"}


def bodies(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Values the schema allows (only the keywords above and `enum`), each one validated against it."""
    return _values(schema).map(lambda value: _checked(value, schema))


def _checked(value: Any, schema: Mapping[str, Any]) -> Any:
    jsonschema.validate(value, schema)
    return value


def _values(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    unknown = set(schema) - KEYWORDS - {"enum"}
    if unknown:
        raise NotImplementedError(f"keywords {sorted(unknown)} are not drawn here")
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return st.one_of(*(_of_type(kind, schema) for kind in kinds))


def _of_type(kind: str, schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "string":
        text = st.from_regex(schema["pattern"], fullmatch=True) if "pattern" in schema else st.text()
        return text.filter(lambda value: len(value) <= schema.get("maxLength", len(value)))
    if kind == "object":
        fields = {name: _values(field) for name, field in schema["properties"].items()}
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {name: value for name, value in fields.items() if name in required},
            optional={name: value for name, value in fields.items() if name not in required},
        )
    raise NotImplementedError(f"type {kind!r} is not drawn here")
