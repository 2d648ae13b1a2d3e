"""One naming convention: snake_case fields that also take the seeds' camelCase names as input."""

from __future__ import annotations

import pytest
from pydantic import Field, ValidationError

from coordinator.domain.ceph.naming import NOTE, SeedNamed, SeedNamedRequest


class Body(SeedNamedRequest):
    mon_urls: list[str] = Field(description="where the mons are")
    pool_name: str | None = None
    zone: str = "default"


class Stored(SeedNamed):
    created_at: float


def test_either_spelling_is_accepted_and_snake_case_is_written():
    assert Body.model_validate({"monUrls": ["a"], "poolName": "p"}) == \
        Body.model_validate({"mon_urls": ["a"], "pool_name": "p"}) == Body(mon_urls=["a"], pool_name="p")
    assert Body.model_validate({"monUrls": ["a"]}).model_dump() == {"mon_urls": ["a"], "pool_name": None,
                                                                   "zone": "default"}
    assert Stored.model_validate({"createdAt": 1}).model_dump() == {"created_at": 1.0}


def test_a_missing_field_is_named_in_snake_case():
    with pytest.raises(ValidationError) as e:
        Body.model_validate({"zone": "z"})
    assert e.value.errors()[0]["loc"] == ("mon_urls",)


def test_the_schema_names_snake_case_and_says_camel_case_is_accepted():
    schema = Body.model_json_schema()
    assert list(schema["properties"]) == ["mon_urls", "pool_name", "zone"]
    assert schema["properties"]["mon_urls"]["description"] == "where the mons are (also accepted as `monUrls`)"
    assert schema["properties"]["pool_name"]["description"] == "(also accepted as `poolName`)"
    assert "description" not in schema["properties"]["zone"]
    assert schema["description"] == NOTE
    assert "description" not in Stored.model_json_schema()  # records are not requests
