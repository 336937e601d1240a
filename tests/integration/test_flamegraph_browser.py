"""The flamegraph page in a real browser: headless Chromium (Debian's `chromium`) opens a page
made from fake data with known numbers, with no network, and the test checks what a person
would see: the header's totals, frames drawn, click to zoom, search, tooltips, the thread filter,
the icicle view, and range selection on the memory chart; a screenshot is kept as an artifact
($MEMPROF_ARTIFACTS, else $MEMPROF_BUILD/artifacts/flamegraph.png).

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe) with the
standard library only: no chromedriver whose version must match the browser, no Python package,
so the same code runs under Debian's python3 and any other. Skipped only when Chromium is
missing and cannot be installed (.ci/deps --tests installs it).

For other tests: the `browser` fixture and open_flamegraph(browser, html_path) give a Page whose
eval/click/screenshot/... drive the page; assert_clean(page) checks for JS errors and requests
that left file://.
"""
import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from flamegraph_page import ASSETS, render

TOP = Path(__file__).resolve().parents[2]
MiB = 1 << 20
KiB = 1 << 10
MATCH = "#e600e6"  # the colour flamegraph.js gives search matches


# ---- a minimal DevTools protocol client over a pipe ---------------------------------------------

class CDPError(Exception):
    pass


def find_chromium():
    """The Chromium to run: $MEMPROF_CHROMIUM, Debian's binary, or one on PATH; None if none."""
    if os.environ.get("MEMPROF_CHROMIUM"):
        return os.environ["MEMPROF_CHROMIUM"]
    if os.access("/usr/lib/chromium/chromium", os.X_OK):  # Debian's, without its wrapper's flags
        return "/usr/lib/chromium/chromium"
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_or_skip():
    """Finds Chromium, installing it with .ci/deps when it can (root or password-less sudo)."""
    exe = find_chromium()
    if exe:
        return exe
    deps = TOP / ".ci" / "deps"
    can_install = os.geteuid() == 0 or (
        shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0)
    if not shutil.which("apt-get"):
        why = "this machine has no apt-get"
    elif not can_install:
        why = "installing needs root or password-less sudo"
    else:
        p = subprocess.run(["bash", str(deps), "--tests"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=1200)
        exe = find_chromium()
        if exe:
            return exe
        why = f"{deps} exited {p.returncode}: {p.stderr.strip()[-600:]}"
    pytest.skip(f"headless Chromium not found and could not be installed ({why}); "
                "install Debian's chromium package (.ci/deps --tests does) or set MEMPROF_CHROMIUM")


class Browser:
    """Headless Chromium with the DevTools protocol on fds 3 (commands in) and 4 (out), messages
    ending in NUL. Every host name fails to resolve and the pages block http(s)/ws(s) requests."""

    def __init__(self, exe, workdir):
        self.workdir = Path(workdir)
        self.log = open(self.workdir / "chromium.log", "w+b")
        cmd_r, self._w = os.pipe()
        self._r, out_w = os.pipe()
        # fds 10 and up in the parent, so that bash can move them to 3 and 4 in any order
        hi = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (cmd_r, out_w)]
        os.close(cmd_r)
        os.close(out_w)
        flags = ["--headless", "--remote-debugging-pipe", f"--user-data-dir={self.workdir / 'profile'}",
                 "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-extensions", "--disable-domain-reliability",
                 "--disable-features=Translate,MediaRouter,OptimizationHints,DialMediaRouteProvider",
                 "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars", "--mute-audio",
                 "--force-device-scale-factor=1", "--window-size=1280,900", "--lang=en-US"]
        if os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
        shell = f'exec 3<&{hi[0]} 4>&{hi[1]} {hi[0]}<&- {hi[1]}>&- && exec "$@"'
        self.proc = subprocess.Popen(["/bin/bash", "-c", shell, "chromium", exe, *flags, "about:blank"],
                                     pass_fds=hi, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        for fd in hi:
            os.close(fd)
        self._buf = b""
        self._id = 0
        self.listeners = {}  # sessionId -> function(method, params)
        try:
            self.version = self.send("Browser.getVersion", timeout=30)
        except BaseException:
            self.close()
            raise

    def log_tail(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def _message(self, deadline):
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from Chromium")
            if select.select([self._r], [], [], left)[0]:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise CDPError(f"Chromium closed the pipe (exit {self.proc.poll()}):\n{self.log_tail()}")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method, params=None, session=None, timeout=10):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self._w, data):]
        deadline = time.monotonic() + timeout
        while True:
            m = self._message(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise CDPError(f"{method}: {m['error']}")
                return m.get("result", {})
            if "method" in m and m.get("sessionId") in self.listeners:
                self.listeners[m["sessionId"]](m["method"], m.get("params", {}))

    def close(self):
        try:
            if self.proc.poll() is None:
                self.send("Browser.close", timeout=5)
        except (CDPError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)
        self.log.close()


class Page:
    """One tab: collects JS errors (exceptions, console errors, browser log errors) and the URL of
    every request it makes."""

    def __init__(self, browser, width=1280, height=900):
        self.browser = browser
        self.errors = []
        self.requests = []
        self.target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget", {"targetId": self.target, "flatten": True})["sessionId"]
        browser.listeners[self.session] = self._event
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(domain + ".enable")
        self.send("Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*", "wss://*", "ftp://*"]})
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def _event(self, method, params):
        if method == "Runtime.exceptionThrown":
            d = params["exceptionDetails"]
            self.errors.append(d.get("exception", {}).get("description") or d.get("text"))
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            args = (str(a.get("value", a.get("description"))) for a in params["args"])
            self.errors.append("console: " + " ".join(args))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append("log: " + params["entry"]["text"] + " " + params["entry"].get("url", ""))
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])

    def send(self, method, params=None, timeout=10):
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    def goto(self, path):
        url = Path(path).resolve().as_uri()
        r = self.send("Page.navigate", {"url": url})
        if r.get("errorText"):
            raise CDPError(f"{url}: {r['errorText']}")
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    def eval(self, expr):
        """The value of a JS expression (promises awaited), as JSON would carry it."""
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise CDPError(f"{expr}: {d.get('exception', {}).get('description') or d.get('text')}")
        return r["result"].get("value")

    def wait_for(self, expr, timeout=5.0):
        """Polls a JS expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expr)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expr} (last: {value!r}; errors: {self.errors})")
            time.sleep(0.05)

    def box(self, selector):
        """The viewport box {x, y, width, height} of the first element matching selector, scrolled
        into view."""
        return self.eval(f"""(() => {{
            const e = document.querySelector({json.dumps(selector)});
            if (!e) return null;
            e.scrollIntoView({{block: 'center', inline: 'nearest'}});
            const r = e.getBoundingClientRect();
            return {{x: r.x, y: r.y, width: r.width, height: r.height}};
        }})()""")

    def mouse(self, kind, x, y, button="none", buttons=0, clicks=0):
        self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": button,
                                               "buttons": buttons, "clickCount": clicks})

    def click(self, x, y):
        self.mouse("mouseMoved", x, y)
        self.mouse("mousePressed", x, y, "left", 1, 1)
        self.mouse("mouseReleased", x, y, "left", 0, 1)

    def drag(self, x0, y, x1, steps=6):
        self.mouse("mouseMoved", x0, y)
        self.mouse("mousePressed", x0, y, "left", 1, 1)
        for k in range(1, steps + 1):
            self.mouse("mouseMoved", x0 + (x1 - x0) * k / steps, y, "left", 1)
        self.mouse("mouseReleased", x1, y, "left", 0, 1)

    def type(self, selector, text):
        self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", {"text": text})

    def screenshot(self, path):
        """Saves the whole page (not only the viewport) as PNG."""
        size = self.eval("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        shot = self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}}, timeout=30)
        Path(path).write_bytes(base64.b64decode(shot["data"]))
        return Path(path)

    def close(self):
        self.browser.listeners.pop(self.session, None)
        self.browser.send("Target.closeTarget", {"targetId": self.target})


@pytest.fixture(scope="module")
def browser():
    exe = chromium_or_skip()
    with tempfile.TemporaryDirectory(prefix="memprof-chromium-") as work:
        b = Browser(exe, work)
        try:
            yield b
        finally:
            b.close()


def open_flamegraph(browser, html_path):
    """Opens a flamegraph page in a new tab and waits until it has drawn; returns the Page."""
    page = Page(browser)
    page.goto(html_path)
    page.wait_for("window.memprof && window.memprof.ready === true")
    return page


def assert_clean(page):
    """No JS error, and no request that left file:// (the page must work offline)."""
    assert page.errors == []
    outside = [u for u in page.requests if not u.startswith(("file://", "data:", "about:"))]
    assert outside == []
    assert page.requests, "the page's own file:// request was not seen: the request log does not work"


def artifact_path(name):
    d = os.environ.get("MEMPROF_ARTIFACTS")
    d = Path(d) if d else Path(os.environ.get("MEMPROF_BUILD", TOP / "build")).resolve() / "artifacts"
    d.mkdir(parents=True, exist_ok=True)
    return d / name


# ---- fake data with known answers --------------------------------------------------------------

SCRIPT = "/home/user/app/script.py"
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
# frame: (function, file, line, kind)
FRAMES = [("script.py", "", -1, 2), ("<module>", SCRIPT, 12, 0), ("main", SCRIPT, 30, 0), ("hold", SCRIPT, 5, 0),
          ("load", SCRIPT, 8, 0), ("small", SCRIPT, 40, 0), ("malloc", LIBC, -1, 1), ("(3 smaller)", "", -1, 3),
          ("worker", SCRIPT, 50, 0)]
# node: (parent, frame); node 9 is hold called from worker, on thread 2
NODES = [(-1, 0), (0, 1), (1, 2), (2, 3), (2, 4), (2, 5), (5, 6), (2, 7), (1, 8), (8, 3)]
# what each stack held: (node, thread, allocated in bucket, freed in bucket or -1, bytes, count)
INTERVALS = [(3, 1, 10, 15, 96 * MiB, 12), (4, 1, 3, 7, 40 * MiB, 5), (6, 1, 2, -1, 3 * MiB, 30),
             (7, 1, 2, -1, 512 * KiB, 3), (9, 2, 8, -1, 1 * MiB, 4)]
BUCKETS, BUCKET_S = 20, 0.1
# The answers, worked out by hand from INTERVALS:
# peak (buckets 10-14): everything but load: 100.5 MiB in 49 allocations, 9 frames drawn;
# thread 2 alone: 1 MiB in 4 (root, <module>, worker, hold);
# range 3-9: the live heap is 43.5 MiB at the snapshots of buckets 3-6 (load + small + merged), so
# p = 3: 43.5 MiB in 38; on thread 2 alone it is 0 until bucket 8, so p = 8: 1 MiB in 4.


def fake_data(mode="peak"):
    strings = [""]
    index = {"": 0}

    def s(text):
        if text not in index:
            index[text] = len(strings)
            strings.append(text)
        return index[text]

    if mode == "peak":
        live = [iv for iv in INTERVALS if iv[2] <= 10 and (iv[3] == -1 or iv[3] > 10)]
        intervals = INTERVALS
    elif mode == "leaks":
        live = intervals = [iv for iv in INTERVALS if iv[3] == -1]
    else:
        live = intervals = [iv for iv in INTERVALS if iv[3] != -1]
    heap = [sum(iv[4] for iv in INTERVALS if iv[2] <= b and (iv[3] == -1 or iv[3] >= b)) for b in range(BUCKETS)]
    return {
        "version": 1,
        "mode": mode,
        "title": f"memprof: {mode} memory of script.py",
        "capture": {"path": "/tmp/capture.memprof", "pid": 4242, "argv": ["python3", "script.py", "--size", "96 MiB"],
                    "python": "3.11.2", "duration_s": 1.95, "truncated": mode == "leaks", "native": True},
        "total": {"bytes": sum(iv[4] for iv in live), "allocations": sum(iv[5] for iv in live)},
        "peak_time_s": 1.03,
        "strings": strings,
        "frames": {"function": [s(f[0]) for f in FRAMES], "file": [s(f[1]) for f in FRAMES],
                   "line": [f[2] for f in FRAMES], "kind": [f[3] for f in FRAMES]},
        "nodes": {"parent": [n[0] for n in NODES], "frame": [n[1] for n in NODES]},
        "threads": [{"id": 1, "name": None}, {"id": 2, "name": "loader </script> <&> \"x\""}],
        "sites": {"node": [iv[0] for iv in live], "thread": [iv[1] for iv in live],
                  "bytes": [iv[4] for iv in live], "count": [iv[5] for iv in live]},
        "chart": {"bucket_s": BUCKET_S, "heap": heap, "rss": [None, None] + [h + 30 * MiB for h in heap[2:]]},
        "end_bucket": 18,
        "intervals": {"node": [iv[0] for iv in intervals], "thread": [iv[1] for iv in intervals],
                      "a": [iv[2] for iv in intervals], "f": [iv[3] for iv in intervals],
                      "bytes": [iv[4] for iv in intervals], "count": [iv[5] for iv in intervals]},
    }


@pytest.fixture(scope="module")
def fake_pages(tmp_path_factory):
    d = tmp_path_factory.mktemp("flamegraph")
    return {mode: render(ASSETS, fake_data(mode), d / f"{mode}.html") for mode in ("peak", "leaks", "temporary")}


@pytest.fixture
def page(browser, fake_pages):
    p = open_flamegraph(browser, fake_pages["peak"])
    yield p
    p.close()


# ---- helpers reading the page ------------------------------------------------------------------

def text(page, selector):
    return page.eval(f"document.querySelector({json.dumps(selector)}).textContent")


def frames(page):
    """The drawn frames: name, the rect's width and the frame's top, in page pixels."""
    return page.eval("""[...document.querySelectorAll('#flamegraph g.frame')].map(g => ({
        name: g.getAttribute('name'), width: +g.querySelector('rect').getAttribute('width'),
        fill: g.querySelector('rect').getAttribute('fill'), top: g.getBoundingClientRect().top}))""")


def flame_width(page):
    return page.eval("+document.querySelector('#flamegraph svg').getAttribute('width')")


def settled(page):
    """Waits until the flamegraph's transitions are over (frame geometry stops changing)."""
    last = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        now = frames(page)
        if now == last:
            return now
        last = now
        time.sleep(0.15)
    raise AssertionError("the flamegraph kept moving")


def view(page):
    return page.eval("window.memprof.view()")


# ---- the tests ---------------------------------------------------------------------------------

def test_page_draws_with_known_totals(page):
    assert page.eval("window.memprof.nodeCount()") == 9  # every stack holding bytes at the peak; not load
    header = text(page, "header")
    assert "Peak heap 100.5 MiB in 49 allocations at 1.03 s" in " ".join(header.split())
    assert "memprof: peak memory of script.py" in header
    assert "pid 4242" in header and "Python 3.11.2" in header and "native frames yes" in header
    assert "python3 script.py --size '96 MiB'" in header
    assert page.eval("document.getElementById('truncated').hidden") is True
    assert text(page, "#view-total") == "100.5 MiB in 49 allocations"
    assert view(page) == {"bytes": 100.5 * MiB, "allocations": 49, "range": None, "thread": None,
                          "inverted": False, "matches": 0}
    names = {f["name"] for f in settled(page)}
    assert {"script.py", "<module> (script.py:12)", "main (script.py:30)", "hold (script.py:5)",
            "malloc (libc.so.6)", "(3 smaller)", "worker (script.py:50)"} <= names
    assert "load (script.py:8)" not in names  # freed before the peak: nothing to draw
    labels = page.eval("[...document.querySelectorAll('#flamegraph .d3-flame-graph-label')].map(d => d.textContent)")
    assert "hold (script.py:5)" in labels  # the text is drawn, not only the name attribute
    assert page.eval("[...document.querySelectorAll('#thread option')].map(o => o.textContent)") == [
        "all threads", "1 main", '2 loader </script> <&> "x"']
    assert_clean(page)


def test_click_zooms_and_tooltip(page):
    full = flame_width(page)
    settled(page)
    b = page.box('#flamegraph g.frame[name="main (script.py:30)"] rect')
    assert 0 < b["width"] < full - 1
    # hovering shows the tooltip: full path, bytes, count and share of the view
    page.mouse("mouseMoved", b["x"] + 5, b["y"] + b["height"] / 2)
    tip = page.wait_for("!document.getElementById('tooltip').hidden && document.getElementById('tooltip').innerText")
    assert "main" in tip and "/home/user/app/script.py:30" in tip
    assert re.search(r"bytes\s+99\.5 MiB \(104,333,312 B\)\s+allocations\s+45\s+share\s+99\.0 % of this view", tip), tip
    page.click(b["x"] + 5, b["y"] + b["height"] / 2)
    page.wait_for(f"""+document.querySelector('#flamegraph g.frame[name="main (script.py:30)"] rect')
                      .getAttribute('width') >= {full} - 0.5""")
    after = {f["name"]: f for f in settled(page)}
    assert abs(after["main (script.py:30)"]["width"] - full) < 0.5
    assert "worker (script.py:50)" not in after  # a sibling of the zoomed frame: hidden
    page.click(*center(page.box("#reset-zoom")))
    page.wait_for("""!!document.querySelector('#flamegraph g.frame[name="worker (script.py:50)"]')""")
    after = {f["name"]: f for f in settled(page)}
    assert after["main (script.py:30)"]["width"] < full - 1
    assert_clean(page)


def center(b):
    return b["x"] + b["width"] / 2, b["y"] + b["height"] / 2


def test_search_highlights(page):
    page.type("#search", "hold")
    page.wait_for("window.memprof.view().matches === 2")
    highlighted = [f["name"] for f in frames(page) if f["fill"] == MATCH]
    assert highlighted == ["hold (script.py:5)", "hold (script.py:5)"]  # main's and worker's
    assert text(page, "#search-result").startswith("2 matches: 97.0 MiB")
    # a search by file name reaches the full path: libc matches the native frame only
    page.eval("{ const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input')); }")
    page.type("#search", "x86_64-linux-gnu")
    page.wait_for("window.memprof.view().matches === 1")
    assert [f["name"] for f in frames(page) if f["fill"] == MATCH] == ["malloc (libc.so.6)"]
    assert_clean(page)


def select_thread(page, value):
    page.eval(f"""{{ const s = document.getElementById('thread'); s.value = {json.dumps(value)};
                    s.dispatchEvent(new Event('change')); }}""")


def test_thread_filter_and_icicle(page):
    select_thread(page, "2")
    assert view(page)["thread"] == 2
    assert text(page, "#view-total") == "1.0 MiB in 4 allocations"
    assert 'thread 2 loader </script> <&> "x"' in text(page, "#view-scope")
    drawn = settled(page)
    assert sorted(f["name"] for f in drawn) == sorted(
        ["script.py", "<module> (script.py:12)", "worker (script.py:50)", "hold (script.py:5)"])
    assert page.eval("window.memprof.nodeCount()") == 4
    top = {f["name"]: f["top"] for f in drawn}
    assert top["script.py"] > top["<module> (script.py:12)"] > top["hold (script.py:5)"]  # root at the bottom
    page.click(*center(page.box("#inverted")))
    assert view(page)["inverted"] is True
    page.wait_for("""(() => { const y = n => document.querySelector(`#flamegraph g.frame[name="${n}"]`)
                        .getBoundingClientRect().top;
                      return y('script.py') < y('<module> (script.py:12)'); })()""")
    top = {f["name"]: f["top"] for f in settled(page)}
    assert top["script.py"] < top["<module> (script.py:12)"] < top["hold (script.py:5)"]  # root on top
    # back to all threads: still inverted, all frames again
    select_thread(page, "")
    assert view(page)["thread"] is None and view(page)["inverted"] is True
    assert text(page, "#view-total") == "100.5 MiB in 49 allocations"
    drawn = settled(page)
    top = {f["name"]: f["top"] for f in drawn}
    assert len(drawn) == 9 and top["script.py"] < top["main (script.py:30)"]
    assert_clean(page)


def test_range_selection(page):
    # the hook, as the brush does
    v = page.eval("window.memprof.selectRange(3, 9)")
    assert v["range"] == {"i": 3, "j": 9, "p": 3}
    assert (v["bytes"], v["allocations"]) == (43.5 * MiB, 38)
    assert text(page, "#view-total") == "43.5 MiB in 38 allocations"
    assert "load (script.py:8)" in {f["name"] for f in settled(page)}
    assert "hold (script.py:5)" not in {f["name"] for f in frames(page)}
    rt = text(page, "#range-text")
    assert "Range 0.3 s–1 s" in rt and "bucket 3 (0.3 s–0.4 s)" in rt and "buckets of 0.1 s" in rt
    # with the thread filter, the highest point is where thread 2's heap is highest
    select_thread(page, "2")
    v = view(page)
    assert v["range"]["p"] == 8 and (v["bytes"], v["allocations"]) == (1 * MiB, 4)
    select_thread(page, "")
    # the whole-run button
    page.click(*center(page.box("#whole-run")))
    assert view(page)["range"] is None and view(page)["bytes"] == 100.5 * MiB
    assert page.eval("document.querySelector('#chart .brush .selection').style.display") == "none"
    # a real drag on the chart, from inside bucket 3 to inside bucket 9: snapped to buckets 3-9
    o = page.box("#chart .brush .overlay")
    x = lambda bucket: o["x"] + o["width"] * bucket / BUCKETS  # noqa: E731
    page.drag(x(3.3), o["y"] + o["height"] / 2, x(9.6))
    page.wait_for("window.memprof.view().range !== null")
    v = view(page)
    assert v["range"] == {"i": 3, "j": 9, "p": 3} and v["bytes"] == 43.5 * MiB
    sel = page.box("#chart .brush .selection")
    assert abs(sel["x"] - x(3)) < 1 and abs(sel["x"] + sel["width"] - x(10)) < 1
    # the peak itself
    v = page.eval("window.memprof.selectRange(10, 14)")
    assert v["range"]["p"] == 10 and (v["bytes"], v["allocations"]) == (100.5 * MiB, 49)
    # a click on the chart without a drag: back to the whole run
    page.click(x(5.5), o["y"] + o["height"] / 2)
    page.wait_for("window.memprof.view().range === null")
    assert text(page, "#view-total") == "100.5 MiB in 49 allocations"
    assert_clean(page)


@pytest.mark.parametrize("mode, whole, early", [
    ("leaks", (4.5 * MiB, 37), (3.5 * MiB, 33)),  # still live at exit; of those, made in buckets 0-5
    ("temporary", (136 * MiB, 17), (40 * MiB, 5)),  # freed before exit; of those, made in buckets 0-5
])
def test_other_modes(browser, fake_pages, mode, whole, early):
    page = open_flamegraph(browser, fake_pages[mode])
    try:
        assert (view(page)["bytes"], view(page)["allocations"]) == whole
        assert page.eval("document.getElementById('truncated').hidden") is (mode != "leaks")
        v = page.eval("window.memprof.selectRange(0, 5)")
        assert v["range"]["p"] is None and (v["bytes"], v["allocations"]) == early
        assert "Range 0 s–0.6 s" in text(page, "#range-text")
        assert_clean(page)
    finally:
        page.close()


def test_screenshot(page):
    page.type("#search", "hold")
    page.wait_for("window.memprof.view().matches === 2")
    settled(page)
    page.eval("window.scrollTo(0, 0)")
    b = page.box('#flamegraph g.frame[name="main (script.py:30)"] rect')
    page.mouse("mouseMoved", b["x"] + b["width"] * 0.6, b["y"] + b["height"] / 2)
    page.wait_for("!document.getElementById('tooltip').hidden")
    path = page.screenshot(artifact_path("flamegraph.png"))
    png = path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width == 1280 and height >= 400
    assert len(png) > 20000  # a drawn page, not a blank one
    assert_clean(page)


def test_real_capture_flamegraph(browser, memprof):
    """A page written by `memprof flamegraph` from a real capture: it draws offline with no
    error, the header shows the capture's peak, hold's frame carries its 96 MiB, search finds
    it, and selecting the whole chart as a range shows the peak's 12 buffers again."""
    from conftest import script_line
    _, cap = memprof.run("peak_buffers.py", flags=("--interval", "1"))
    html = memprof.tmp / "real.html"
    p = memprof.cmd("flamegraph", "-o", html, cap)
    assert p.returncode == 0, p.stderr
    data = json.loads(memprof.cmd("flamegraph", "--json", cap).stdout)
    page = open_flamegraph(browser, html)
    try:
        assert_clean(page)
        assert page.eval("window.memprof.nodeCount()") > 3
        assert page.eval("window.memprof.view().bytes") == data["total"]["bytes"]
        settled(page)
        line = script_line("peak_buffers.py", "PEAK-LINE")
        hold = [f for f in frames(page) if f["name"] and f["name"].startswith(f"hold (peak_buffers.py:{line})")]
        assert len(hold) == 1 and hold[0]["width"] > 0.9 * flame_width(page)
        page.type("#search", "hold")
        assert page.wait_for("window.memprof.view().matches >= 1")
        n = len(data["chart"]["heap"])
        v = page.eval(f"window.memprof.selectRange(0, {n - 1})")
        assert v["bytes"] >= 96 * MiB and v["range"]["i"] == 0
        settled(page)
        page.screenshot(artifact_path("flamegraph-real.png"))
    finally:
        page.close()


def test_aggregated_capture_flamegraph(browser, memprof):
    """The page of an aggregated capture (memprof run --aggregate): the flamegraph of the peak is
    whole, the chart is drawn from the memory samples, and no range can be selected (the range
    line says why; selecting one leaves the whole run)."""
    _, cap = memprof.run("peak_buffers.py", flags=("--interval", "1", "--aggregate"))
    html = memprof.tmp / "agg.html"
    p = memprof.cmd("flamegraph", "-o", html, cap)
    assert p.returncode == 0, p.stderr
    data = json.loads(memprof.cmd("flamegraph", "--json", cap).stdout)
    assert data["capture"]["aggregated"] is True and data["intervals"]["node"] == []
    assert max(data["chart"]["heap"]) >= 96 * MiB  # the samples saw the 96 MiB phase
    page = open_flamegraph(browser, html)
    try:
        assert_clean(page)
        assert page.eval("window.memprof.view().bytes") == data["total"]["bytes"] >= 96 * MiB
        assert "aggregated capture" in text(page, "#range-text")
        assert page.eval("document.querySelector('#chart .heap-line') !== null")
        assert page.eval("document.querySelector('#chart .brush') === null")
        assert page.eval("document.getElementById('whole-run').hidden") is True
        n = len(data["chart"]["heap"])
        v = page.eval(f"window.memprof.selectRange(0, {n - 1})")
        assert v["range"] is None and v["bytes"] == data["total"]["bytes"]
    finally:
        page.close()
