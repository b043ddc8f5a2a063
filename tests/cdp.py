"""A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (no websocket
library needed): enough to open a page in headless Chromium, click like a user (real mouse
events at an element's position), wait for downloads, reload and take screenshots.

Also a command line that screenshots a gallery's reviewer controls for the docs::

    python tests/cdp.py results/report/gallery.html docs/gallery-review.png
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BROWSER_NAMES = ("chromium", "chromium-browser")


class Chromium:
    """Headless Chromium driven through the DevTools protocol on file descriptors 3 and 4."""

    def __init__(self, binary: str, profile: Path, downloads: Path, *, width: int = 1280) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire() -> None:  # in the child: the protocol's fixed descriptors 3 and 4
            # Moved above 4 first: the pipe itself may have been given 3 or 4.
            read_end = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            write_end = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--remote-debugging-pipe",
                "--no-sandbox",  # root in a container: the sandbox cannot start
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--hide-scrollbars",
                f"--window-size={width},900",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=wire,
            close_fds=False,  # our pipe ends are non-inheritable (PEP 446); 3 and 4 are not
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        attached = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)
        self.session = attached["sessionId"]
        downloads.mkdir(parents=True, exist_ok=True)
        self.call(
            "Browser.setDownloadBehavior",
            behavior="allow",
            downloadPath=str(downloads),
            eventsEnabled=True,
        )
        self.page("Page.enable")

    # --- the protocol ---------------------------------------------------------------------

    def _receive(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("no message from Chromium")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited: {self.process.stderr.read()[-2000:]!r}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params: Any):
        """Send a command and return its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def page(self, method: str, **params: Any):
        """A command to the attached page."""
        return self.call(method, session=self.session, **params)

    def wait_event(self, method: str, timeout: float = 30, **match: Any) -> dict:
        """The first (kept or coming) event ``method`` whose params contain ``match``."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                params = event.get("params", {})
                wanted = all(params.get(k) == v for k, v in match.items())
                if event.get("method") == method and wanted:
                    return self.events.pop(i)["params"]
            self.events.append(self._receive(max(0.0, deadline - time.monotonic())))

    # --- what a user does ---------------------------------------------------------------------

    def open(self, url: str) -> None:
        self.events.clear()
        self.page("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def reload(self) -> None:
        self.events.clear()
        self.page("Page.reload")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """A left mouse click in the middle of the element ``selector`` names (scrolled into
        view first), as input events: the page sees what a user's click makes it see."""
        box = self.evaluate(
            f"(function () {{ var e = document.querySelector({json.dumps(selector)});"
            " if (!e) { return null; } e.scrollIntoView({block: 'center'});"
            " var r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        if box is None:
            raise LookupError(f"no element {selector}")
        x, y = box
        self.page("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def download(self, selector: str, folder: Path, timeout: float = 30) -> Path:
        """Click ``selector`` and return the file the download it starts writes."""
        self.click(selector)
        begin = self.wait_event("Browser.downloadWillBegin", timeout)
        self.wait_event("Browser.downloadProgress", timeout, guid=begin["guid"], state="completed")
        return folder / begin["suggestedFilename"]

    def screenshot(self, path: Path, clip: dict | None = None) -> None:
        params: dict[str, Any] = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.page("Page.captureScreenshot", **params)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close", timeout=10)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        self.process.stderr.close()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def find_browser() -> str | None:
    return next(filter(None, map(shutil.which, BROWSER_NAMES)), None)


def screenshot_review_controls(gallery: Path, out: Path, work: Path) -> None:
    """Mark the two best matches copy and the two highest-scored wrong ones not a copy, and
    capture the wrong matches under the sticky reviewer's bar (the picture in docs/)."""
    with Chromium(find_browser(), work / "profile", work / "downloads", width=1400) as browser:
        browser.open(gallery.resolve().as_uri())
        for section, n, mark in (("top", 1, "copy"), ("top", 2, "copy")) + tuple(
            ("wrong", n, "not_copy") for n in (1, 2)
        ):
            browser.click(f'#{section} tr.match:nth-child({n}) button[data-mark="{mark}"]')
        # The wrong matches' heading just below the bar, which stays at the top of the window.
        y = browser.evaluate(
            "var bar = document.getElementById('review').offsetHeight;"
            " var head = document.getElementById('wrong');"
            " window.scrollTo(0, head.getBoundingClientRect().top + window.scrollY - bar - 8);"
            " window.scrollY"
        )
        browser.screenshot(out, {"x": 0, "y": y, "width": 1400, "height": 720})


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        screenshot_review_controls(Path(sys.argv[1]), Path(sys.argv[2]), Path(tmp))
