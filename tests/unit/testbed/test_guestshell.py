"""The serial shell's answer line: what is typed never reads as the answer, and half a line is no answer."""

from __future__ import annotations

import base64

import pytest

from testbed.guestshell import Answer, answer, typed


def test_the_echo_of_the_typed_line_is_not_the_answer():
    line = typed("wget -q -O- http://169.254.169.254/latest/meta-data/instance-id", "MD1")
    assert line.endswith("\r") and "HS-OUT-MD1" not in line
    assert answer(line.replace("\r", "\r\n"), "MD1") is None


def test_an_answer_counts_once_its_line_has_ended():
    encoded = base64.b64encode(b"i-123\nroamer.live.test").decode()
    printed = f"/ # o=$( ... )\r\nHS-BLOCKDEVS vda\r\nHS-OUT-MD1 rc=0 {encoded}"
    assert answer(printed[:-4], "MD1") is None and answer(printed, "MD1") is None  # still arriving
    assert answer(printed + "\r\n", "MD1") == Answer(0, "i-123\nroamer.live.test")
    assert answer(printed + "\r\n", "MD2") is None


def test_a_tag_is_a_plain_word():
    with pytest.raises(ValueError):
        typed("true", "a b")
