"""The console pages in a real browser: Debian's headless Chromium opens the URL a user gets, noVNC
connects through the proxy and the agent tunnel to a real qemu, and what the page shows is the guest's
screen, compared pixel for pixel with qemu's screendump. Keys typed into the page reach the guest's shell.
The screenshots are kept as artefacts (see the `artefacts` fixture).
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path

import pytest
from PIL import Image, ImageChops
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from testbed.browser import chromium
from testbed.qemuvm import QemuVm

pytestmark = [pytest.mark.real, pytest.mark.timeout(180)]
SHIFTED = {"$": "4", "(": "9", ")": "0", "*": "8", ">": ".", "|": "\\", "_": "-"}


def type_keys(driver, text: str) -> None:
    """Type as a person on a US keyboard does: shifted characters with a real Shift key press, which
    noVNC forwards as a scancode (the guest's keyboard has no idea of characters)."""
    chain = ActionChains(driver)
    for ch in text:
        if ch in SHIFTED:
            chain.key_down(Keys.SHIFT).send_keys(SHIFTED[ch]).key_up(Keys.SHIFT)
        else:
            chain.send_keys(ch)
    chain.perform()


def canvas_image(driver) -> Image.Image:
    url = driver.execute_script("return document.querySelector('#screen canvas').toDataURL('image/png')")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def wait_for(what: str, check, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return result


def same_screen(vm: QemuVm, shown: Image.Image, scratch: Path) -> bool:
    dump = Image.open(vm.screendump(scratch)).convert("RGB")
    return shown.size == dump.size and ImageChops.difference(shown, dump).getbbox() is None


def look_at_vnc_page(url: str, vm: QemuVm, artefacts: Path, scratch: Path) -> None:
    with chromium() as driver:
        driver.get(url)
        wait_for("noVNC to connect", lambda: driver.execute_script("return document.body.dataset.state") ==
                 "connected")
        wait_for("the page to show the guest's screen", lambda: same_screen(vm, canvas_image(driver), scratch))
        canvas = driver.find_element(By.CSS_SELECTOR, "#screen canvas")
        driver.save_screenshot(str(artefacts / "vnc-page.png"))
        # the screenshot itself (what a person sees), not only the canvas, holds the guest's screen
        shot = Image.open(artefacts / "vnc-page.png").convert("RGB")
        x, y = canvas.location["x"], canvas.location["y"]
        seen = shot.crop((x, y, x + canvas.size["width"], y + canvas.size["height"]))
        dump = Image.open(vm.screendump(scratch)).convert("RGB")
        assert seen.size == dump.size
        assert ImageChops.difference(seen, dump).getbbox() is None, "the screenshot differs from the guest"

        canvas.click()
        type_keys(driver, "echo HS-VNC-TYPED-$((6*7)) >/dev/ttyS0\n")
        wait_for("the typed command's output on the serial port", lambda: "HS-VNC-TYPED-42" in vm.serial_text())
        wait_for("the page to show the typed command", lambda: same_screen(vm, canvas_image(driver), scratch))
        driver.save_screenshot(str(artefacts / "vnc-page-typed.png"))


def look_at_serial_page(url: str, artefacts: Path) -> str:
    with chromium() as driver:
        driver.get(url)
        wait_for("the serial page to connect", lambda: driver.execute_script(
            "return document.body.dataset.state") == "connected")
        driver.find_element(By.CSS_SELECTOR, ".terminal").click()
        type_keys(driver, "echo HS-SERIAL-PAGE-$((6*7))\n")
        script = "return term.lines.map((line) => line.map((cell) => cell[1]).join('').trimEnd()).join('\\n');"
        text = wait_for("the guest's answer in the terminal", lambda: (t := driver.execute_script(script)) and
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
