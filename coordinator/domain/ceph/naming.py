"""One naming convention for the Ceph API and records: snake_case, with the seeds' camelCase accepted.

ZStack's Ceph API (the seeds) spells fields in camelCase (`monUrls`, `poolName`, `backupStorageUuid`);
the rest of the coordinator's API is snake_case. Requests and stored records take either spelling of
a field, so calls written for the seeds and records written by earlier versions keep working; every
answer and every new record uses snake_case only. Request models also say so in the OpenAPI document.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, AliasGenerator, BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

NOTE = "Field names are snake_case; the seeds' camelCase names (e.g. monUrls for mon_urls) are accepted as aliases."


def _either(name: str) -> AliasChoices:
    return AliasChoices(name, to_camel(name))


def _document(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """Name each field's camelCase alias in its description, and the convention in the model's."""
    properties = schema.get("properties", {})
    for name in cls.model_fields:
        camel = to_camel(name)
        if camel != name and name in properties:
            prop = properties[name]
            prop["description"] = f"{prop.get('description', '')} (also accepted as `{camel}`)".strip()
    schema["description"] = f"{schema.get('description', '')} {NOTE}".strip()


class SeedNamed(BaseModel):
    """A stored record: reads snake_case or camelCase fields, writes snake_case."""

    model_config = ConfigDict(alias_generator=AliasGenerator(validation_alias=_either))


class SeedNamedRequest(BaseModel):
    """A request body or query: snake_case fields, camelCase accepted, documented as such."""

    model_config = ConfigDict(alias_generator=AliasGenerator(validation_alias=_either), json_schema_extra=_document)
