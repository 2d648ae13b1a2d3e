"""System tags: the seeds' `type::content` format, rendered into the VM, and the LIKE query pattern."""

from __future__ import annotations

import pytest

from agentkit.errors import Invalid, TooLarge
from agentkit.model import VmSpec
from coordinator.domain import tags

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPOS0LRNXfJ8hiMaYQPCc/+hIhD1XvSLgG9KYn7rGONX"  # a throw-away key


def test_a_tag_is_type_and_content():
    assert tags.parse("userdata::a: 1") == ("userdata", "a: 1")
    assert tags.parse("sshkey::ssh-ed25519 AAAA me@box::x") == ("sshkey", "ssh-ed25519 AAAA me@box::x")
    for bad in ("userdata", "userdata::", "::"):
        with pytest.raises(Invalid) as e:
            tags.parse(bad, "system_tags")
        assert e.value.field == "system_tags" and "<type>::<content>" in str(e.value)


def test_a_tag_of_a_type_no_vm_takes_is_refused_where_it_comes_in():
    """A misspelt `userdat::` would be stored and do nothing; stored ones still render as they are."""
    tags.check(f"sshkey::{KEY} me@box")
    for bad in ("userdat::#cloud-config", "bogus::x"):
        with pytest.raises(Invalid) as e:
            tags.check(bad, "system_tags")
        assert e.value.field == "system_tags" and "known: userdata, sshkey" in str(e.value)
    spec = VmSpec(uuid="v", name="v")
    tags.render(spec, ["bogus::x", "userdata::a: 1"])
    assert spec.userdata == "a: 1"


def test_an_sshkey_tag_is_one_public_key_or_refused_naming_the_field():
    """The guest is served it as a line of its authorized keys: a second line would be a second key."""
    for bad, problem in (("sshkey::ssh-ed25519 AAAA me@box", "not an SSH public key of type ssh-ed25519"),
                         (f"sshkey::{KEY} me\nssh-rsa AAAA", "one line"), ("sshkey::hello", "unknown SSH key type")):
        with pytest.raises(Invalid) as e:
            tags.check(bad, "system_tags")
        assert e.value.status == 400 and e.value.field == "system_tags" and problem in str(e.value)


def test_user_data_is_capped_at_16_kib_and_a_tag_at_64_ki_characters():
    """413 naming the field: a VM's desired object goes to its host in every snapshot of the host's view."""
    assert tags.parse("userdata::" + "x" * 16384)[1] == "x" * 16384
    assert tags.parse("userdata::" + "\\n" * 16384)[1] == "\\n" * 16384  # 16 KiB once unescaped
    for big in ("userdata::" + "x" * 16385, "userdata::" + "é" * 8193, "sshkey::" + "k" * 65536):
        with pytest.raises(TooLarge) as e:
            tags.parse(big, "system_tags")
        assert e.value.status == 413 and e.value.field == "system_tags"
    assert "16384" in str(pytest.raises(TooLarge, tags.parse, "userdata::" + "y" * 600 * 1024).value)


def test_rendering_takes_the_first_userdata_and_names_keys_by_comment():
    spec = VmSpec(uuid="v1", name="web", userdata="stale", ssh_keys={"old": "ssh-rsa B old"})
    tags.render(spec, ["userdata::a: 1\\nb: 2", "sshkey:: ssh-ed25519 AAAA me@box ", "userdata::second",
                       "sshkey::ssh-rsa BBBB", "other::ignored"])
    assert spec.userdata == "a: 1\nb: 2"
    assert spec.ssh_keys == {"me@box": "ssh-ed25519 AAAA me@box", "key-3": "ssh-rsa BBBB"}
    tags.render(spec, [])
    assert spec.userdata is None and spec.ssh_keys == {}


def test_like_has_two_wildcards_and_nothing_else_is_special():
    assert tags.like("userdata%").match("userdata::x\ny")
    assert not tags.like("userdata%").match("sshkey::userdata")
    assert tags.like("ssh_ey%").match("sshkey::k")
    assert not tags.like("ssh_ey%").match("sshhkey::k")
    assert tags.like("a*b?").match("a*b?") and not tags.like("a*b?").match("axxbc")


def test_like_takes_brackets_and_other_regex_syntax_literally():
    assert tags.like("userdata::[x]%").match("userdata::[x] y") and not tags.like("userdata::[x]%").match("userdata::x")
    assert tags.like("%[foo,bar]%").match("userdata::#cloud-config\\nlist: [foo,bar]")
    assert tags.like("a.b(c)+$^|\\%").match("a.b(c)+$^|\\ rest") and not tags.like("a.b%").match("axb")


def test_a_vms_tags_together_are_bounded_in_number_and_size():
    tags.check_set(["sshkey::k"] * tags.MAX_TAGS, "tag")
    with pytest.raises(TooLarge, match=f"at most {tags.MAX_TAGS} system tags"):
        tags.check_set(["sshkey::k"] * (tags.MAX_TAGS + 1), "tag")
    with pytest.raises(TooLarge, match=f"the limit is {tags.MAX_TOTAL} bytes"):
        tags.check_set(["userdata::" + "a" * tags.USERDATA_MAX] * 5, "tag")
