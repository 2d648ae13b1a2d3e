"""Bearer tokens as every listener reads them: anything that cannot be a token of ours is no token, never a 500."""

from __future__ import annotations

import pytest

from agentkit import bearer

TOKEN = "tok-0123456789abcdef"


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN} "])
def test_the_token_is_found_in_any_case_of_the_scheme(header):
    assert bearer.from_header(header) == TOKEN and bearer.matches(header, TOKEN)


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic " + TOKEN, "Bearer é", "Bearer \udcff\udcfe",
                                    "Bearer a b", "Bearer " + "x" * 5000, f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"])
def test_anything_else_matches_nothing(header):
    assert not bearer.matches(header, TOKEN)
