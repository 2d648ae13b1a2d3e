"""The tiny guest's wget (testbed/guest/wget.sh over the busybox the image carries), run on this machine with
the guest's own applets against a lighttpd and a server that never answers, in a namespace of the run.

Checked: `-T` in each spelling bounds the transfer instead of crashing busybox, the other arguments reach
busybox as given (an option's argument that holds a T included), and a server that never answers is given
up on after -T seconds. And the cause, while it lasts: busybox itself dies of SIGSEGV on `-T`.
"""

from __future__ import annotations

import signal
import time

import pytest

from testbed.guest_image import BUSYBOX, DATA
from testbed.netns import Netns
from testbed.webserver import WebServer

pytestmark = pytest.mark.real
SILENT_PORT = 8081


@pytest.fixture(scope="module")
def ns(run):
    ns = run.netns("wget")
    ns.ip("link", "set", "lo", "up")
    return ns


@pytest.fixture(scope="module")
def web(run, ns):
    docroot = run.path("wget-docroot")
    (docroot / "latest").mkdir(parents=True)
    (docroot / "latest" / "instance-id").write_text("i-0123456789")
    server = WebServer(ns, docroot, "127.0.0.1", 8080).start()
    yield server
    ns.run.stop(server.proc)


@pytest.fixture(scope="module")
def applets(run):
    """A PATH of the guest's applets (busybox's `timeout`, not coreutils')."""
    bindir = run.path("wget-bin")
    bindir.mkdir()
    (bindir / "timeout").symlink_to(BUSYBOX)
    return str(bindir)


def wget(ns: Netns, applets: str, *args: str):
    return ns.sh("env", f"PATH={applets}", str(BUSYBOX), "sh", str(DATA / "wget.sh"), *args, rcs=range(256))


@pytest.mark.parametrize("spelling", [["-T", "5", "-q"], ["-T5", "-q"], ["-qT", "5"], ["-qT5"], ["-q", "--timeout=5"],
                                      ["--timeout", "5", "-q"], ["-q"]])
def test_every_spelling_of_the_timeout_fetches(ns, web, applets, spelling):
    got = wget(ns, applets, *spelling, "-O-", web.url("/latest/instance-id"))
    assert (got.returncode, got.stdout) == (0, "i-0123456789")


def test_other_arguments_reach_busybox_as_given(ns, web, applets, run):
    out = run.path("wget-out")
    got = wget(ns, applets, "-q", "--header", "X-Test: T5", "-O", str(out), "-T", "5", web.url("/latest/instance-id"))
    assert got.returncode == 0 and out.read_text() == "i-0123456789"


def test_a_server_that_never_answers_is_given_up_after_the_timeout(ns, applets):
    ns.popen([str(BUSYBOX), "nc", "-l", "-p", str(SILENT_PORT)], log_name="wget-silent")
    deadline = time.monotonic() + 10
    while not ns.sh("ss", "-Htln", f"sport = :{SILENT_PORT}").stdout.strip():
        assert time.monotonic() < deadline, "nc did not listen"
        time.sleep(0.05)
    t0 = time.monotonic()
    got = wget(ns, applets, "-T", "1", "-q", "-O-", f"http://127.0.0.1:{SILENT_PORT}/")
    assert got.returncode != 0 and time.monotonic() - t0 < 5


def test_busybox_itself_crashes_on_the_timeout_option(ns, web):
    """Why wget.sh exists: Debian's busybox-static is built without FEATURE_WGET_TIMEOUT. When this fails,
    the busybox installed handles -T and the wrapper can go."""
    got = ns.sh(str(BUSYBOX), "wget", "-T", "5", "-q", "-O-", web.url("/latest/instance-id"), rcs=range(-64, 256))
    assert got.returncode in (-signal.SIGSEGV, 128 + signal.SIGSEGV), got
