"""Headless Chromium driven through the DevTools protocol over a pipe.

Python standard library only: Chromium is started with
--remote-debugging-pipe, reads JSON commands on its file descriptor 3 and
answers on 4, each message ended by a NUL byte. No port is opened, nothing
is downloaded, and every wait has a deadline.

    with Browser() as browser:
        page = browser.new_page(1280, 720)
        page.navigate("file:///path/deck.html")
        value = page.evaluate("document.title")
        png = page.screenshot()
"""

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time

# The flags every headless start uses here: no sandbox (we run as root in
# CI), no GPU, and nothing that talks to the network.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
    "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
    "--hide-scrollbars", "--font-render-hinting=none",
]


def _die_with_parent():
    """In the child, before exec: if this Python process dies (a test
    timeout), the kernel kills Chromium too (PR_SET_PDEATHSIG = 1)."""
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def find_chromium():
    """The path of Chromium (Debian's `chromium`), or None."""
    override = os.environ.get("CHROMIUM")
    if override:
        return shutil.which(override) or (override if os.access(
            override, os.X_OK) else None)
    for name in ("chromium", "chromium-browser", "google-chrome-stable",
                 "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(Exception):
    pass


class Browser:
    """One headless Chromium; a context manager that always stops it."""

    def __init__(self, executable=None, timeout=60.0):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError("chromium not found")
        self.timeout = timeout
        self.next_id = 0
        self.buffer = b""
        self.events = []
        self.process = None
        self.profile = tempfile.mkdtemp(prefix="chat-deck-chromium-")
        # Our ends of the two pipes, and Chromium's, moved above 10 so that
        # bash's "3<&X 4>&Y" cannot clobber one with the other (dash cannot
        # redirect descriptors above 9: bash it is).
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        child_in = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.write_fd, self.read_fd = to_browser_w, from_browser_r
        argv = [self.executable, *FLAGS,
                f"--user-data-dir={self.profile}",
                "--remote-debugging-pipe", "about:blank"]
        try:
            self.process = subprocess.Popen(
                ["bash", "-c", f'exec "$@" 3<&{child_in} 4>&{child_out}',
                 "bash", *argv],
                pass_fds=(child_in, child_out), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True, preexec_fn=_die_with_parent)
        except OSError:
            os.close(self.write_fd)
            os.close(self.read_fd)
            shutil.rmtree(self.profile, ignore_errors=True)
            raise
        finally:
            os.close(child_in)
            os.close(child_out)
        os.set_blocking(self.read_fd, False)

    # -- the pipe ------------------------------------------------------

    def _read_message(self, deadline, waiting_for="an answer"):
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"chromium: no {waiting_for} in time")
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise BrowserError("chromium closed the pipe: " +
                                   self._stderr_tail())
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def _stderr_tail(self):
        if self.process and self.process.poll() is not None:
            return self.process.stderr.read().decode(errors="replace")[-2000:]
        return "(still running)"

    def send(self, method, params=None, session=None, timeout=None):
        """Sends one command and returns its result (events that arrive
        meanwhile are kept for wait_event)."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method,
                   "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            _, ready, _ = select.select([], [self.write_fd], [], self.timeout)
            if not ready:
                raise BrowserError("chromium does not read its pipe")
            data = data[os.write(self.write_fd, data):]
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read_message(deadline, f"answer to {method}")
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method, session=None, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, event in enumerate(self.events):
                if event["method"] == method and (
                        session is None or event.get("sessionId") == session):
                    return self.events.pop(i)
            reply = self._read_message(deadline, f"event {method}")
            if "method" in reply:
                self.events.append(reply)

    # -- pages -------------------------------------------------------------

    def new_page(self, width, height):
        target = self.send("Target.createTarget", {"url": "about:blank"})
        session = self.send("Target.attachToTarget", {
            "targetId": target["targetId"], "flatten": True})["sessionId"]
        page = Page(self, session)
        page.send("Page.enable")
        page.send("Runtime.enable")
        page.send("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": 1,
            "mobile": False})
        return page

    def close(self):
        if self.process and self.process.poll() is None:
            try:
                self.send("Browser.close", timeout=5)
            except (BrowserError, OSError):
                pass
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()  # our own child, by its pid
                self.process.wait(timeout=5)
        if self.process:
            self._reap_helpers()
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.process and self.process.stderr:
            self.process.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _reap_helpers(self):
        """Chromium's helpers (zygote, renderers, crash handler) share the
        session we started it in: wait for them to leave, then end any
        that stays, one by one, by pid."""
        session = self.process.pid
        deadline = time.monotonic() + 5
        while True:
            left = []
            for name in os.listdir("/proc"):
                if not name.isdigit():
                    continue
                try:
                    with open(f"/proc/{name}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[3]) == session and fields[0] != "Z":
                    left.append(int(name))  # field 6 of stat: the session
            if not left:
                return
            if time.monotonic() > deadline:
                for pid in left:
                    try:
                        os.kill(pid, 9)
                    except OSError:
                        pass
                return
            time.sleep(0.1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Page:
    def __init__(self, browser, session):
        self.browser = browser
        self.session = session

    def send(self, method, params=None, timeout=None):
        return self.browser.send(method, params, self.session, timeout)

    def navigate(self, url, timeout=30):
        """Loads url and waits for its load event (a change of the #hash
        only is a navigation within the document: nothing to wait for)."""
        self.browser.events.clear()
        result = self.send("Page.navigate", {"url": url})
        if "errorText" in result:
            raise BrowserError(f"{url}: {result['errorText']}")
        if result.get("loaderId"):
            self.browser.wait_event("Page.loadEventFired", self.session,
                                    timeout)

    def evaluate(self, expression, timeout=30):
        """The value of a JavaScript expression (promises are awaited)."""
        result = self.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True,
            "awaitPromise": True}, timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or \
                details.get("text")
            raise BrowserError(f"JavaScript error: {text}")
        return result["result"].get("value")

    def screenshot(self):
        data = self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": False})["data"]
        return base64.b64decode(data)

    def pdf(self):
        data = self.send("Page.printToPDF", {
            "printBackground": True, "preferCSSPageSize": True,
            "displayHeaderFooter": False}, timeout=120)["data"]
        return base64.b64decode(data)
