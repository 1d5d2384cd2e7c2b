"""The web page in headless Chromium (Debian's chromium + chromium-driver, driven by selenium;
no browser download): the live keyframe strip fills, a question streams an answer, the cited
frames are highlighted, and the screenshot is not blank."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from egovlm.edge.runtime import EdgeRuntime
from egovlm.edge.server import create_app
from tests.edge.edge_fakes import CHROMEDRIVER, CHROMIUM, ServerThread, headless_chromium, scripted_engine

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (scripts/system-deps.sh)",
)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, EdgeRuntime]]:
    rt = EdgeRuntime(scripted_engine(capacity=50, token_delay_s=0.02), "synth://?fps=20&size=320x240&seed=4")
    rt.start()
    try:
        assert rt.wait_for_keyframes(3, timeout=30), rt.status_line()
        with ServerThread(create_app(rt, token="web-token")) as s:
            yield s.url, rt
    finally:
        rt.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with headless_chromium("--disable-quic", "--disable-sync", "--window-size=1200,900") as driver:
        yield driver


def test_page_streams_an_answer_and_highlights_cited_frames(
    server: tuple[str, EdgeRuntime], browser: object
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, rt = server
    d = browser
    d.get(f"{url}/#token=web-token")  # type: ignore[attr-defined]
    wait = WebDriverWait(d, 20)
    # the live strip shows the buffer's keyframes, with loaded thumbnails (blob URLs: token mode)
    wait.until(lambda drv: len(drv.find_elements(By.CSS_SELECTOR, "#strip .kf img")) >= 3)
    wait.until(lambda drv: drv.execute_script(
        "return [...document.querySelectorAll('#strip .kf img')].every(i => i.complete && i.naturalWidth > 0)"))  # fmt: skip
    assert "running" in d.find_element(By.ID, "status").text  # type: ignore[attr-defined]

    d.find_element(By.ID, "question").send_keys("What did I pick up?")  # type: ignore[attr-defined]
    d.find_element(By.ID, "options").send_keys("A. a banana\nB. a red cup\nC. a book")  # type: ignore[attr-defined]
    d.find_element(By.ID, "ask-button").click()  # type: ignore[attr-defined]
    # tokens stream in before the answer is complete
    wait.until(lambda drv: drv.find_element(By.ID, "answer-stream").text.startswith("<think>"))
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "body[data-answered]")))

    assert d.find_element(By.ID, "answer-main").text == "B. a red cup"  # type: ignore[attr-defined]
    assert "</answer>" in d.find_element(By.ID, "answer-stream").text  # type: ignore[attr-defined]
    assert "TTFT" in d.find_element(By.ID, "latency").text  # type: ignore[attr-defined]
    cited = d.find_elements(By.CSS_SELECTOR, "#cited .kf.cited")  # type: ignore[attr-defined]
    assert len(cited) == 2
    cited_ids = {int(c.get_attribute("data-id")) for c in cited}

    # A cited keyframe may be newer than the strip's last refresh: it is highlighted once the strip
    # shows it (the next refresh), so wait for the whole cited set rather than the first highlight.
    def highlighted(drv: Any) -> set[int]:
        return {
            int(f.get_attribute("data-id")) for f in drv.find_elements(By.CSS_SELECTOR, "#strip .kf.cited")
        }

    wait.until(lambda drv: highlighted(drv) == cited_ids)
    assert cited_ids <= {k.id for k in rt.snapshot().keyframes}
    border = d.execute_script(  # type: ignore[attr-defined]
        "return getComputedStyle(document.querySelector('#strip .kf.cited')).borderTopColor"
    )
    assert border == "rgb(255, 176, 46)"  # the accent colour: visibly highlighted

    png = d.get_screenshot_as_png()  # type: ignore[attr-defined]
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert shot.shape[0] >= 600 and shot.shape[1] >= 800
    assert shot.std() > 10, "blank screenshot"
    accent = np.all(np.abs(shot.astype(int) - [255, 176, 46]) < 12, axis=-1)
    assert accent.sum() > 200, "no highlighted frame border visible in the screenshot"


def test_page_pause_and_forget_buttons(server: tuple[str, EdgeRuntime], browser: object) -> None:
    """Pause stops frames reaching the engine and the page says so; Forget empties the buffer, the
    strip and the answer, and a thumbnail the page showed is gone from the server; Resume resumes."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, rt = server
    d: Any = browser  # selenium's WebDriver
    d.get(f"{url}/#token=web-token")
    wait = WebDriverWait(d, 20)
    wait.until(lambda drv: drv.find_element(By.ID, "capture").text == "● recording")
    wait.until(lambda drv: len(drv.find_elements(By.CSS_SELECTOR, "#strip .kf img")) >= 1)
    shown = int(d.find_element(By.CSS_SELECTOR, "#strip .kf").get_attribute("data-id"))

    d.find_element(By.ID, "pause-button").click()
    wait.until(lambda drv: drv.find_element(By.ID, "capture").text == "❚❚ paused")
    assert rt.capture_state() == "paused"
    assert d.find_element(By.ID, "pause-button").text == "Resume"
    seen = rt.engine.status().frames_seen
    time.sleep(0.6)  # the source delivers 20 fps meanwhile
    assert rt.engine.status().frames_seen == seen, "a frame reached the engine while paused"

    d.find_element(By.ID, "forget-button").click()
    wait.until(lambda drv: drv.find_elements(By.CSS_SELECTOR, "body[data-forgotten]"))
    assert len(rt.engine.buffer) == 0 and rt.jpeg(shown) is None
    assert d.find_elements(By.CSS_SELECTOR, "#strip .kf") == []
    assert d.find_element(By.ID, "answer-main").text == ""
    status = d.execute_async_script(
        "const cb = arguments[arguments.length - 1]; fetch(arguments[0], "
        "{headers: {Authorization: 'Bearer web-token'}}).then(r => cb(r.status))",
        f"/v1/keyframes/{shown}.jpg",
    )
    assert status == 404

    d.find_element(By.ID, "pause-button").click()
    wait.until(lambda drv: drv.find_element(By.ID, "capture").text == "● recording")
    assert rt.wait_for_keyframes(1, timeout=20), rt.status_line()  # frames flow again


def test_page_without_token_reports_the_error(server: tuple[str, EdgeRuntime], browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    d = browser
    d.execute_script("sessionStorage.clear()")  # type: ignore[attr-defined]
    d.get(f"{url}/")  # type: ignore[attr-defined]
    WebDriverWait(d, 10).until(lambda drv: "offline" in drv.find_element(By.ID, "status").text)
    assert "401" in d.find_element(By.ID, "status").text  # type: ignore[attr-defined]
