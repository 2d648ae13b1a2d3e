"""monUrl parsing: the seeds' format, defaults, errors naming the bad part, never the password."""

import pytest

from cephagent import monurl
from cephagent.errors import InvalidMonUrl


@pytest.mark.parametrize("text, host, ssh_port, mon_port", [
    ("root:password@192.168.0.123", "192.168.0.123", 22, 6789),
    ("root:password@192.168.0.123:", "192.168.0.123", 22, 6789),
    ("root:password@192.168.0.123:22/?monPort=6789", "192.168.0.123", 22, 6789),
    ("root:password@192.168.0.123:2222", "192.168.0.123", 2222, 6789),
    ("root:password@192.168.0.123/?monPort=6790", "192.168.0.123", 22, 6790),
    ("root:password@192.168.0.123:/?monPort=6790", "192.168.0.123", 22, 6790),
    ("root:password@mon-1.example.com:23?monPort=3300", "mon-1.example.com", 23, 3300),
    ("root:password@[fd00::5]:22/?monPort=6789", "fd00::5", 22, 6789),
])
def test_parses_seed_format_with_defaults(text, host, ssh_port, mon_port):
    u = monurl.parse(text)
    assert (u.ssh_username, u.ssh_password, u.host, u.ssh_port, u.mon_port) == \
        ("root", "password", host, ssh_port, mon_port)


def test_password_may_hold_colon_and_at():
    u = monurl.parse("admin:p@ss:w0rd@10.0.0.1")
    assert (u.ssh_username, u.ssh_password, u.host) == ("admin", "p@ss:w0rd", "10.0.0.1")


@pytest.mark.parametrize("text, part", [
    ("192.168.0.123", "ssh_username:ssh_password@"),
    (":pw@192.168.0.123", "ssh_username"),
    ("root@192.168.0.123", "ssh_password"),
    ("root:@192.168.0.123", "ssh_password"),
    ("root:secretpw@", "mon_server_ip is missing"),
    ("root:secretpw@999.1.2.3", "mon_server_ip '999.1.2.3'"),
    ("root:secretpw@bad_host!", "mon_server_ip 'bad_host!'"),
    ("root:secretpw@[fd00::zz]", "IPv6"),
    ("root:secretpw@1.2.3.4:ssh", "ssh_port 'ssh'"),
    ("root:secretpw@1.2.3.4:70000", "ssh_port '70000'"),
    ("root:secretpw@1.2.3.4/?monPort=abc", "monPort 'abc'"),
    ("root:secretpw@1.2.3.4/?monPort=0", "monPort '0'"),
    ("root:secretpw@1.2.3.4/?port=1", "unknown parameter 'port'"),
    ("root:secretpw@1.2.3.4/path", "unexpected '/'"),
])
def test_errors_name_the_bad_part_and_hide_the_password(text, part):
    with pytest.raises(InvalidMonUrl) as e:
        monurl.parse(text)
    assert part in str(e.value)
    assert "secretpw" not in str(e.value)
    assert e.value.field == "mon_urls" and e.value.code == "invalid_mon_url"


def test_list_names_position_and_refuses_duplicates():
    urls = monurl.parse_list("root:a@10.0.0.1,root:b@10.0.0.2:22/?monPort=6789,root:c@10.0.0.1/?monPort=6790")
    assert [u.mon_addr for u in urls] == ["10.0.0.1:6789", "10.0.0.2:6789", "10.0.0.1:6790"]
    with pytest.raises(InvalidMonUrl, match=r"mon_urls\[1\]: ssh_port 'x'"):
        monurl.parse_list(["root:a@10.0.0.1", "root:b@10.0.0.2:x"])
    with pytest.raises(InvalidMonUrl, match=r"mon_urls\[2\]: mon 10.0.0.1:6789 is already given as mon_urls\[0\]"):
        monurl.parse_list(["root:a@10.0.0.1", "root:a@10.0.0.2", "root:a@10.0.0.1:22"])
    with pytest.raises(InvalidMonUrl, match="at least one"):
        monurl.parse_list([])


def test_display_forms_never_show_the_password():
    u = monurl.parse("root:hunter2@[fd00::5]:2222/?monPort=3300")
    assert u.redacted == "root:***@[fd00::5]:2222/?monPort=3300"
    assert "hunter2" not in repr(u) and "hunter2" not in str(u)
    assert u.mon_addr == "[fd00::5]:3300"


def test_mon_host_for_librados_picks_protocol_by_port():
    assert monurl.ceph_mon_host([("10.0.0.1", 6789), ("10.0.0.2", 3300), ("fd00::5", 7000)]) == \
        "[v1:10.0.0.1:6789],[v2:10.0.0.2:3300],[v1:[fd00::5]:7000]"
