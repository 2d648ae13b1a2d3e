"""The console pages in a real browser: Debian's headless Chromium opens the URL a user gets, noVNC
connects through the proxy and the agent tunnel to a real qemu, and what the page shows is the guest's
screen, compared pixel for pixel with qemu's screendump. Keys typed into the page reach the guest's shell.
The screenshots are kept as artefacts (see the `artefacts` fixture).
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
from pathlib import Path

import pytest
from PIL import Image, ImageChops
from selenium.webdriver.common.by import By

from testbed.browser import (
    canvas_image,
    chromium,
    console_log,
    page_state,
    screenshot_of_canvas,
    terminal_text,
    type_keys,
    wait_for,
)
from testbed.qemuvm import QemuVm

pytestmark = [pytest.mark.real, pytest.mark.timeout(180)]
CANVAS_SIZES = "return [...document.querySelectorAll('#spice-screen canvas')].map((c) => [c.width, c.height]);"


def same_screen(vm: QemuVm, shown: Image.Image, scratch: Path) -> bool:
    dump = Image.open(vm.screendump(scratch)).convert("RGB")
    return shown.size == dump.size and ImageChops.difference(shown, dump).getbbox() is None


def look_at_vnc_page(url: str, vm: QemuVm, artefacts: Path, scratch: Path) -> None:
    with chromium() as driver:
        driver.get(url)
        wait_for("noVNC to connect", lambda: page_state(driver) == "connected")
        wait_for("the page to show the guest's screen", lambda: same_screen(vm, canvas_image(driver), scratch))
        # the screenshot itself (what a person sees), not only the canvas, holds the guest's screen
        seen = screenshot_of_canvas(driver, artefacts / "vnc-page.png")
        dump = Image.open(vm.screendump(scratch)).convert("RGB")
        assert seen.size == dump.size
        assert ImageChops.difference(seen, dump).getbbox() is None, "the screenshot differs from the guest"

        driver.find_element(By.CSS_SELECTOR, "#screen canvas").click()
        type_keys(driver, "echo HS-VNC-TYPED-$((6*7)) >/dev/ttyS0\n")
        wait_for("the typed command's output on the serial port", lambda: "HS-VNC-TYPED-42" in vm.serial_text())
        wait_for("the page to show the typed command", lambda: same_screen(vm, canvas_image(driver), scratch))
        driver.save_screenshot(str(artefacts / "vnc-page-typed.png"))


def look_at_serial_page(url: str, artefacts: Path) -> str:
    with chromium() as driver:
        driver.get(url)
        wait_for("the serial page to connect", lambda: page_state(driver) == "connected")
        driver.find_element(By.CSS_SELECTOR, ".terminal").click()
        type_keys(driver, "echo HS-SERIAL-PAGE-$((6*7))\n")
        text = wait_for("the guest's answer in the terminal", lambda: (t := terminal_text(driver)) and
                        "HS-SERIAL-PAGE-42" in t and t)
        driver.save_screenshot(str(artefacts / "serial-page.png"))
        return text


async def test_novnc_page_shows_the_guests_screen_and_types_into_it(vm, lab, artefacts, run):
    url = lab.url(vm.uuid, "vnc", lab.grants.issue(vm.uuid, "vnc", ttl=120), ws=False)
    await asyncio.to_thread(look_at_vnc_page, url, vm, artefacts, run.path("screendump.ppm"))


async def test_serial_page_runs_a_command_in_the_guest(vm, lab, artefacts):
    url = lab.url(vm.uuid, "serial", lab.grants.issue(vm.uuid, "serial", ttl=120), ws=False)
    text = await asyncio.to_thread(look_at_serial_page, url, artefacts)
    assert "echo HS-SERIAL-PAGE-$((6*7))" in text  # the shell's own echo of the typed line ...
    assert "\nHS-SERIAL-PAGE-42" in text  # ... and its answer on a line of its own


def look_at_spice_page(url: str, vm: QemuVm, artefacts: Path, scratch: Path) -> float:
    """The share of pixels that differ between spice-html5's canvas and qemu's screendump."""
    with chromium() as driver:
        driver.get(url)
        wait_for("spice-html5 to connect", lambda: page_state(driver) == "connected")
        script = "const c = document.querySelector('#spice-screen canvas'); return c && c.toDataURL('image/png');"
        dump = Image.open(vm.screendump(scratch)).convert("RGB")

        def shown() -> Image.Image | None:
            data = driver.execute_script(script)
            img = Image.open(io.BytesIO(base64.b64decode(data.split(",", 1)[1]))).convert("RGB") if data else None
            return img if img is not None and img.size == dump.size and img.getbbox() else None

        try:
            img = wait_for("the guest's screen in the SPICE canvas", shown)
        except TimeoutError as e:  # what the page had instead, for whoever reads the failure
            driver.save_screenshot(str(artefacts / "spice-page-timeout.png"))
            sizes = driver.execute_script(CANVAS_SIZES)
            raise TimeoutError(f"{e}: the page is {page_state(driver)}, its canvases {sizes}, qemu's screen "
                               f"{dump.size}; screenshot {artefacts / 'spice-page-timeout.png'}; its console:\n"
                               + "\n".join(console_log(driver))) from None
        time.sleep(1)
        img = shown() or img
        driver.save_screenshot(str(artefacts / "spice-page.png"))
        diff = ImageChops.difference(img, dump).convert("L").point(lambda v: 255 if v > 32 else 0)
        return sum(diff.histogram()[255:]) / (dump.size[0] * dump.size[1])


async def test_spice_page_shows_the_guests_screen(vm, lab, artefacts, run, caplog):
    caplog.set_level(logging.INFO)  # the proxy's and the tunnel's session lines, shown with a failure
    url = lab.url(vm.uuid, "spice", lab.grants.issue(vm.uuid, "spice", ttl=120), ws=False)
    differing = await asyncio.to_thread(look_at_spice_page, url, vm, artefacts, run.path("spice-dump.ppm"))
    assert differing < 0.001  # the same screen (SPICE may encode some of it lossily)
