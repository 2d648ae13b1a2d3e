"""agentkit.errors: one envelope for every expected failure, a message from the kwargs, the kwargs kept."""

from __future__ import annotations

from agentkit import errors


def test_the_envelope():
    assert errors.error_body("conflict", "taken", "name") == {
        "error": {"code": "conflict", "message": "taken", "field": "name"}}


def test_a_message_is_made_from_the_template_and_the_kwargs_are_kept():
    e = errors.NotFound(what="host", ident="h1")
    assert (str(e), e.message, e.kwargs, e.field) == ("host h1 does not exist", "host h1 does not exist",
                                                      {"what": "host", "ident": "h1"}, None)
    assert (e.code, e.status) == ("not_found", 404)
    assert e.body() == {"error": {"code": "not_found", "message": "host h1 does not exist", "field": None}}


def test_an_explicit_message_and_field():
    e = errors.Invalid("must be 1-4094", field="vlan")
    assert e.body() == {"error": {"code": "invalid", "message": "must be 1-4094", "field": "vlan"}}
    assert isinstance(e, errors.HostStackError) and (errors.Unauthorized().status, errors.Unavailable.status) == (
        401, 503)
