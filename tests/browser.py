"""A real headless browser for the report tests: Debian's `chromium`, driven over the DevTools
protocol (websockets), so a page is checked as a person's browser shows it: console errors,
uncaught exceptions, every network request it makes, and a screenshot.

scripts/chromium.sh installs chromium when absent (run_tests.sh calls it).
"""
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from websockets.sync.client import connect

# No sandbox (tests run as root in CI), no GPU, and nothing of Chromium's own that calls out:
# the page is the only thing that could make a request.
FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run',
         '--disable-default-apps', '--disable-extensions', '--hide-scrollbars',
         '--remote-debugging-address=127.0.0.1', '--remote-debugging-port=0')


def chromium_binary() -> Optional[str]:
    return shutil.which('chromium')


@dataclass
class PageLoad:
    """What loading one page did."""
    url: str
    requests: List[str] = field(default_factory=list)        # every URL the page asked for
    console: List[str] = field(default_factory=list)         # console.error/warn/assert calls
    exceptions: List[str] = field(default_factory=list)      # uncaught script errors
    log_errors: List[str] = field(default_factory=list)      # the browser's own log (CSP, ...)

    @property
    def other_requests(self) -> List[str]:
        return [u for u in self.requests if u != self.url]

    @property
    def errors(self) -> List[str]:
        return self.console + self.exceptions + self.log_errors


class Chromium:
    """One headless Chromium with a fresh profile under `profile`; a context manager."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 1000,
                 timeout: float = 30.0):
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError('chromium not found: scripts/chromium.sh installs it '
                               '(apt-get install -y chromium)')
        self.profile = Path(profile)
        self.profile.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self.size = (width, height)
        self._log = open(self.profile / 'chromium.log', 'wb')
        self.proc = subprocess.Popen(
            [binary, *FLAGS, f'--user-data-dir={self.profile}', 'about:blank'],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self._id = 0
        self._pending: List[dict] = []
        self._connection = contextlib.ExitStack()
        self.ws = None
        try:   # loopback only: no proxy from the environment
            self.ws = self._connection.enter_context(connect(
                self._endpoint(), max_size=None, open_timeout=timeout, proxy=None,
                ping_interval=None))
        except BaseException:
            self.close()
            raise

    def _endpoint(self) -> str:
        """Chromium writes its DevTools port and browser path to DevToolsActivePort."""
        port_file = self.profile / 'DevToolsActivePort'
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f'chromium exited with {self.proc.returncode}; see '
                                   f'{self.profile / "chromium.log"}')
            try:
                port, path = port_file.read_text().split()[:2]
                return f'ws://127.0.0.1:{port}{path}'
            except (OSError, ValueError):
                time.sleep(0.05)
        raise RuntimeError('chromium did not open its DevTools port in time')

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.call('Browser.close')
            except Exception:   # noqa: BLE001 - it may be gone already; killed below
                pass
            self.ws = None
        self._connection.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)   # the group this class started
            self.proc.wait(timeout=10)
        self._log.close()

    # -------------------------------------------------------------------- the protocol
    def call(self, method: str, params: Optional[dict] = None, session: Optional[str] = None):
        self._id += 1
        message = {'id': self._id, 'method': method, 'params': params or {}}
        if session:
            message['sessionId'] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + self.timeout
        while True:
            data = self._receive(deadline)
            if data.get('id') == self._id:
                if 'error' in data:
                    raise RuntimeError(f'{method}: {data["error"]}')
                return data.get('result', {})
            self._pending.append(data)

    def _receive(self, deadline: float) -> dict:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError('chromium did not answer in time')
        return json.loads(self.ws.recv(timeout=left))

    def _wait_for(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, event in enumerate(self._pending):
                if event.get('method') == method and event.get('sessionId') == session:
                    return self._pending.pop(i)
            self._pending.append(self._receive(deadline))

    # -------------------------------------------------------------------------- pages
    def open(self, path: Path) -> 'Page':
        target = self.call('Target.createTarget', {'url': 'about:blank'})['targetId']
        session = self.call('Target.attachToTarget', {'targetId': target,
                                                      'flatten': True})['sessionId']
        for domain in ('Page', 'Runtime', 'Log', 'Network'):
            self.call(f'{domain}.enable', session=session)
        width, height = self.size
        self.call('Emulation.setDeviceMetricsOverride',
                  {'width': width, 'height': height, 'deviceScaleFactor': 1, 'mobile': False},
                  session=session)
        self._pending.clear()
        url = Path(path).resolve().as_uri()
        self.call('Page.navigate', {'url': url}, session=session)
        self._wait_for('Page.loadEventFired', session)
        page = Page(self, session, PageLoad(url))
        page.settle()
        return page


class Page:
    def __init__(self, browser: Chromium, session: str, load: PageLoad):
        self.browser, self.session, self.load = browser, session, load

    def settle(self, seconds: float = 0.5) -> PageLoad:
        """Gathers what the page did, giving late requests and messages `seconds` to come."""
        self.browser.call('Runtime.evaluate', {'expression': '1'}, session=self.session)
        time.sleep(seconds)
        self.browser.call('Runtime.evaluate', {'expression': '1'}, session=self.session)
        keep = []
        for event in self.browser._pending:
            if event.get('sessionId') != self.session:
                keep.append(event)
                continue
            method, params = event.get('method'), event.get('params', {})
            if method == 'Network.requestWillBeSent':
                self.load.requests.append(params['request']['url'])
            elif method == 'Runtime.consoleAPICalled' and params.get('type') in (
                    'error', 'warning', 'assert'):
                self.load.console.append(' '.join(str(a.get('value', a.get('description')))
                                                  for a in params.get('args', [])))
            elif method == 'Runtime.exceptionThrown':
                self.load.exceptions.append(json.dumps(params.get('exceptionDetails', {}))[:500])
            elif method == 'Log.entryAdded' and params['entry'].get('level') in ('error',
                                                                                  'warning'):
                self.load.log_errors.append(params['entry'].get('text', ''))
        self.browser._pending = keep
        return self.load

    def evaluate(self, expression: str):
        result = self.browser.call('Runtime.evaluate', {'expression': expression,
                                                        'returnByValue': True},
                                   session=self.session)
        if 'exceptionDetails' in result:
            raise RuntimeError(f'{expression}: {result["exceptionDetails"]}')
        return result['result'].get('value')

    def screenshot(self, path: Path, clip: Optional[dict] = None) -> Path:
        """A PNG of the whole page (or of `clip`: x, y, width, height in CSS pixels)."""
        params = {'format': 'png', 'captureBeyondViewport': True}
        if clip is None:
            width, height = self.evaluate('[document.documentElement.scrollWidth, '
                                          'document.documentElement.scrollHeight]')
            clip = {'x': 0, 'y': 0, 'width': width, 'height': height}
        params['clip'] = dict(clip, scale=1)
        data = self.browser.call('Page.captureScreenshot', params, session=self.session)['data']
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)
