"""Debian's headless Chromium driven by selenium (Debian's chromedriver): how tests look at a page as a user.

Chromium runs without sandbox, GPU, QUIC or any background traffic (no first-run, component updates,
sync or network prediction), in a new empty profile directory, so a test reaches only the URLs it opens.
The console helpers read what noVNC's canvas and term.js's buffer show and type as a person does.
`python -m testbed.browser vnc|serial URL OUTDIR [--type TEXT] [--expect TEXT]` does it from inside a
network namespace (`ip netns exec user …`): a "user" who reaches the console proxy and nothing else.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--force-device-scale-factor=1"]
SHIFTED = {"$": "4", "(": "9", ")": "0", "*": "8", ">": ".", "|": "\\", "_": "-"}  # US keyboard
TERMINAL_TEXT = "return term.lines.map((line) => line.map((cell) => cell[1]).join('').trimEnd()).join('\\n');"
T = TypeVar("T")


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[webdriver.Chrome]:
    """A Chromium with a viewport of about `width` x `height`; quit (and its profile removed) on exit."""
    with tempfile.TemporaryDirectory(prefix="hs-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in [*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console, for failures
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)
    return result


def console_log(driver: webdriver.Chrome) -> list[str]:
    """What the page wrote to its console (and its uncaught errors) since the last call."""
    return [entry["message"] for entry in driver.get_log("browser")]


def page_state(driver: webdriver.Chrome) -> str:
    """What our console pages say of their connection: connecting, connected, disconnected."""
    state: str = driver.execute_script("return document.body.dataset.state")
    return state


def type_keys(driver: webdriver.Chrome, text: str) -> None:
    """Type as a person on a US keyboard does: shifted characters with a real Shift key press, which
    noVNC forwards as a scancode (the guest's keyboard has no idea of characters)."""
    chain = ActionChains(driver)
    for ch in text:
        if ch in SHIFTED:
            chain.key_down(Keys.SHIFT).send_keys(SHIFTED[ch]).key_up(Keys.SHIFT)
        else:
            chain.send_keys(ch)
    chain.perform()


def canvas_image(driver: webdriver.Chrome) -> Image.Image:
    """What noVNC's canvas holds, pixel for pixel."""
    url = driver.execute_script("return document.querySelector('#screen canvas').toDataURL('image/png')")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")


def screenshot_of_canvas(driver: webdriver.Chrome, path: Path) -> Image.Image:
    """Save a screenshot of the page at `path`; the part of it where the canvas is (what a person sees)."""
    canvas = driver.find_element(By.CSS_SELECTOR, "#screen canvas")
    driver.save_screenshot(str(path))
    x, y, w, h = canvas.location["x"], canvas.location["y"], canvas.size["width"], canvas.size["height"]
    return Image.open(path).convert("RGB").crop((x, y, x + w, y + h))


def terminal_text(driver: webdriver.Chrome) -> str:
    text: str = driver.execute_script(TERMINAL_TEXT)
    return text


def _vnc(driver: webdriver.Chrome, out: Path, typed: str | None) -> dict[str, object]:
    wait_for("noVNC to connect", lambda: page_state(driver) == "connected")
    wait_for("the guest's screen", lambda: canvas_image(driver).getbbox())  # anything but black
    time.sleep(1)  # let the first full update land
    screenshot_of_canvas(driver, out / "vnc-page.png").save(out / "vnc-seen.png")
    if typed:
        driver.find_element(By.CSS_SELECTOR, "#screen canvas").click()
        type_keys(driver, typed)
        time.sleep(2)
        screenshot_of_canvas(driver, out / "vnc-page-typed.png").save(out / "vnc-seen-typed.png")
    return {"state": page_state(driver), "title": driver.title}


def _serial(driver: webdriver.Chrome, out: Path, typed: str | None, expect: str | None) -> dict[str, object]:
    wait_for("the serial page to connect", lambda: page_state(driver) == "connected")
    if typed:
        driver.find_element(By.CSS_SELECTOR, ".terminal").click()
        type_keys(driver, typed)
    if expect:
        wait_for(f"{expect!r} in the terminal", lambda: expect in terminal_text(driver))
    driver.save_screenshot(str(out / "serial-page.png"))
    return {"state": page_state(driver), "text": terminal_text(driver)}


def main() -> None:
    p = argparse.ArgumentParser(prog="testbed.browser")
    p.add_argument("kind", choices=["vnc", "serial", "page"])
    p.add_argument("url")
    p.add_argument("out", type=Path)
    p.add_argument("--type", dest="typed")
    p.add_argument("--expect")
    a = p.parse_args()
    with chromium() as driver:
        driver.get(a.url)
        if a.kind == "vnc":
            result = _vnc(driver, a.out, a.typed)
        elif a.kind == "serial":
            result = _serial(driver, a.out, a.typed, a.expect)
        else:
            time.sleep(2)
            result = {"state": page_state(driver), "status": driver.find_element(By.ID, "status").text}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
