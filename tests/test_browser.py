"""The page of `rtcodec serve` in a real browser: headless Chromium, a fake microphone reading a speech file.

Skips where no Chromium or Playwright is installed (`.ci/run` installs both: Debian's chromium, pip's playwright).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install 'rtcodec[serve]')")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
import uvicorn  # noqa: E402

from rtcodec.hub import Pretrained  # noqa: E402
from rtcodec.serve import ServeOptions, create_app  # noqa: E402
from rtcodec.serve.protocol import MAX_MESSAGE_BYTES  # noqa: E402

from .conftest import AUDIO, golden_model, needs_audio, needs_golden  # noqa: E402
from .test_serve import expected_output, wire_equal  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = [
    needs_golden,
    needs_audio,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found (Debian: apt install chromium)"),
]
BLOCK = 200
OUTPUTS = 240  # 3 s of ticks: the first 55 give nothing (the lookahead), the rest carry audio


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def served():
    models = Pretrained(golden_model("encoder"), golden_model("decoder"))
    app = create_app(models, ServeOptions(slots=2))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, "127.0.0.1", port, ws_max_size=MAX_MESSAGE_BYTES, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}/", app.state.server, models
    server.should_exit = True
    thread.join(30)


def _browser_args(speech) -> list[str]:
    return [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={speech}",
    ]


def _watch(page) -> list[str]:
    """What the console would show a developer: errors, and requests that failed or got an error status."""
    problems = []
    page.on("console", lambda message: message.type == "error" and problems.append(f"console: {message.text}"))
    page.on(
        "response", lambda response: response.status >= 400 and problems.append(f"{response.status} {response.url}")
    )
    page.on("requestfailed", lambda request: problems.append(f"failed {request.url}"))
    return problems


def _figures_cleared(page) -> bool:
    """Every figure back to its dash and both meters blank."""
    return page.evaluate(
        "[...document.querySelectorAll('#figures td')].every(td => td.textContent === '–') &&"
        " ['level-in', 'level-out'].every(id => !document.getElementById(id).getContext('2d')"
        ".getImageData(0, 0, 300, 14).data.some(v => v))"
    )


def test_the_page_converts_a_fake_microphone(served, tmp_path):
    url, server, models = served
    speech = tmp_path / "speech.wav"
    data, rate = sf.read(AUDIO / "rms.wav", dtype="float32")
    sf.write(speech, data, rate, subtype="PCM_16")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=_browser_args(speech))
        try:
            page = browser.new_page()
            problems = _watch(page)
            page.goto(url)
            page.wait_for_function("document.querySelector('#voice').options.length > 1", timeout=30_000)
            assert not page.is_visible("#upload") and not page.is_visible("#upload-label")
            page.select_option("#voice", "upload")
            assert page.is_visible("#upload") and "at most 2 MB" in page.inner_text("#upload-label")
            page.select_option("#voice", "bright")
            assert not page.is_visible("#upload")
            page.click("#start")
            page.wait_for_function(f"window.rtcodec.received.length >= {OUTPUTS}", timeout=120_000)
            page.wait_for_function("window.rtcodec.stats !== null && window.rtcodec.roundTripMs !== undefined")
            got = page.evaluate(
                "({sent: window.rtcodec.sent.map(a => Array.from(a)), received: window.rtcodec.received.map(a =>"
                " Array.from(a)), consumed: window.rtcodec.consumed, ready: window.rtcodec.ready,"
                " roundTrip: window.rtcodec.roundTripMs})"
            )
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            shown = {
                key: page.inner_text(f"#{key}") for key in ("algorithmic", "roundtrip", "compute", "bitrate", "delay")
            }
            assert not _figures_cleared(page)
            page.click("#stop")
            page.wait_for_function("document.querySelector('#status').textContent === 'Stopped.'")
            assert _figures_cleared(page)  # Stop leaves no frozen figures or meters
        finally:
            browser.close()
    print(f"screenshot: {tmp_path / 'page.png'}; shown: {shown}")
    assert problems == []  # no console error, no 404 (the favicon included)
    assert shown["delay"].endswith(" ms")
    assert got["ready"]["block"] == BLOCK and shown["algorithmic"] == "695 ms" and "ms" in shown["roundtrip"]
    assert got["roundTrip"] > 695  # at least the algorithmic latency: the measurement is on the audio clock
    # 1) Exact: what the page played is the library's conversion of the blocks the page sent, tick by tick.
    sent = [np.asarray(block, np.float32) / 32768 for block in got["sent"]]
    expected = expected_output(models, server.voice("bright"), sent, got["consumed"][:OUTPUTS], "convert")
    played = np.concatenate([np.asarray(r, np.float32) for r in got["received"][:OUTPUTS]]) / 32768
    assert played.size > 100 * BLOCK and wire_equal(played, expected)
    # 2) The microphone path: the page sent the speech file, resampled by Chromium's fake device and the page.
    # Each 0.1 s window is matched on its own to the place in the file it resembles most. On a quiet machine
    # nearly all match above 0.95; with another process busy, Chromium's fake device skips and stretches its
    # audio (seen: a median of 0.7). So: some window matches closely (above 0.95: a stretch of the file came
    # through intact), and the median is far above what unrelated audio reaches (about 0.12 for 1600 samples
    # against 124 000 places).
    mic = np.concatenate(sent)[: 3 * 16000]
    windows = [mic[i : i + 1600] for i in range(0, mic.size - 1600 + 1, 1600)]
    scores = np.array([_match(w, data) for w in windows if np.sqrt(np.mean(w**2)) > 0.01])
    assert scores.size >= 10 and scores.max() > 0.95 and np.median(scores) > 0.4, np.round(scores, 3)


def _match(window: np.ndarray, source: np.ndarray) -> float:
    """The correlation of `window` with the part of `source` it matches best (cross-correlation by FFT)."""
    n = 1 << int(np.ceil(np.log2(source.size + window.size)))
    cross = np.fft.irfft(np.fft.rfft(source, n) * np.conj(np.fft.rfft(window, n)), n)[: source.size - window.size]
    start = int(np.argmax(cross))
    return float(np.corrcoef(window, source[start : start + window.size])[0, 1])


def test_the_page_checks_an_upload_and_shows_why_a_call_was_refused(served, tmp_path):
    """A file chosen is the voice, whatever the menu said; one over the server's limit is refused in the page
    (no call: a browser never sees the server's 1009 for a message it sent too large); a refused call shows
    the server's reason."""
    url, _, _ = served
    speech = tmp_path / "speech.wav"
    sf.write(speech, sf.read(AUDIO / "rms.wav", dtype="float32")[0], 16000, subtype="PCM_16")
    big, junk = tmp_path / "big.wav", tmp_path / "junk.wav"
    sf.write(big, np.zeros(1_100_000, np.float32), 16000, subtype="PCM_16")  # 2.2 MB
    junk.write_bytes(b"not audio at all")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=_browser_args(speech))
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("document.querySelector('#voice').options.length > 1", timeout=30_000)
            page.select_option("#voice", "bright")
            page.set_input_files("#upload", str(big))
            assert page.input_value("#voice") == "upload" and page.is_visible("#upload")
            page.click("#start")
            status = page.inner_text("#status")
            assert "big.wav is 2.1 MB; the server takes reference clips of at most 2 MB" in status, status
            assert page.evaluate("window.rtcodec.closed") is None and page.is_enabled("#start")
            page.set_input_files("#upload", str(junk))
            page.click("#start")
            page.wait_for_function("window.rtcodec.closed !== null", timeout=60_000)
            status = page.inner_text("#status")
            assert status.startswith("The server ended the call: the reference clip is not usable audio"), status
            assert page.evaluate("window.rtcodec.closed.code") == 1008
        finally:
            browser.close()
