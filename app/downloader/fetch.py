"""HTTP for the downloader: pooled keep-alive connections, checked redirects, retries with backoff.

Retried (up to `retries` more attempts, with exponential backoff and jitter, honouring
`Retry-After`): 5xx, 408, 429, timeouts, dropped connections and bodies shorter than their
`Content-Length`. Not retried: 404, 410 and other 4xx, and a redirect to Flickr's
"photo unavailable" placeholder, which is never followed.

Each photo has an overall deadline (`FetchConfig.deadline`, all attempts and waits together): a
server that drips its bytes cannot hold a worker longer. Failure details count the bytes truly read.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urljoin, urlsplit

import urllib3

from app.badrows import Refused

# Flickr answers a removed photo with a redirect to a placeholder such as
# https://s.yimg.com/pw/images/en-us/photo_unavailable.png (also photo_unavailable_l.png, ...).
PLACEHOLDER_RE = re.compile(r"/photo_unavailable[^/]*\.(?:png|gif|jpe?g)\Z", re.IGNORECASE)
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
MAX_DELAY_S = 60.0
USER_AGENT = "contextual-image-classifier/0.1 (Open Images photo download; urllib3)"


class FetchError(Refused):
    """A download attempt that failed.

    Args:
        reason: short token for the manifest (`http_404`, `timeout`, `unavailable`, ...).
        detail: what was received.
        retry: whether another attempt may succeed.
        retry_after: seconds the server asked to wait, if it did.
    """

    def __init__(self, reason: str, detail: str, retry: bool = False, retry_after: Optional[float] = None):
        super().__init__(reason, detail)
        self.retry = retry
        self.retry_after = retry_after


@dataclass(frozen=True)
class FetchConfig:
    """HTTP settings.

    Args:
        timeout: seconds for connecting and for each read.
        deadline: seconds for one photo, all attempts, reads and waits together (`deadline`).
        retries: extra attempts after a retryable failure.
        backoff: first retry delay in seconds; doubled at each attempt (capped at 60 s).
        max_bytes: larger bodies are refused (`too_large`).
        pool_size: keep-alive connections kept per host (the number of workers).
        proxy: an HTTP proxy URL for every request, or None.
    """

    timeout: float = 30.0
    deadline: float = 60.0
    retries: int = 3
    backoff: float = 1.0
    max_bytes: int = 64 << 20
    pool_size: int = 16
    proxy: Optional[str] = None


@dataclass(frozen=True)
class Fetched:
    """A downloaded body, the URL that served it, and how many attempts it took."""

    body: bytes
    url: str
    attempts: int


class Fetcher:
    """Thread-safe GETs with retries; one instance is shared by all download workers."""

    def __init__(self, config: FetchConfig = FetchConfig()):
        self.config = config
        options = dict(num_pools=64, headers={"User-Agent": USER_AGENT}, maxsize=config.pool_size, block=False,
                       retries=False, timeout=urllib3.Timeout(connect=config.timeout, read=config.timeout))
        self.http = urllib3.ProxyManager(config.proxy, **options) if config.proxy else urllib3.PoolManager(**options)

    def get(self, url: str) -> Fetched:
        """Downloads `url`, retrying transient failures.

        Raises:
            FetchError: the last attempt's failure.
        """
        deadline = time.monotonic() + self.config.deadline
        for attempt in range(self.config.retries + 1):
            try:
                body, final_url = self._attempt(url, deadline)
                return Fetched(body, final_url, attempt + 1)
            except FetchError as err:
                delay = self._delay(attempt, err.retry_after)
                if not err.retry or attempt == self.config.retries or time.monotonic() + delay >= deadline:
                    err.detail = f"{err.detail} (attempt {attempt + 1})"
                    raise
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: Optional[float]) -> float:
        delay = min(MAX_DELAY_S, self.config.backoff * 2**attempt) * random.uniform(0.5, 1.0)
        return min(MAX_DELAY_S, max(delay, retry_after or 0.0))

    def _attempt(self, url: str, deadline: float) -> tuple[bytes, str]:
        """One attempt: follows redirects itself, refusing the placeholder."""
        for _ in range(MAX_REDIRECTS + 1):
            response = self._request(url, deadline)
            try:
                if response.status in REDIRECTS:
                    url = _redirect_target(url, response.headers.get("Location"))
                    continue
                if response.status != 200:
                    raise _status_error(response)
                return self._read(response, deadline), url
            finally:
                response.drain_conn()
        raise FetchError("too_many_redirects", f"more than {MAX_REDIRECTS} redirects, last to {url}")

    def _request(self, url: str, deadline: float) -> urllib3.BaseHTTPResponse:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchError("deadline", f"over the {self.config.deadline:g} s deadline for one photo")
        wait = urllib3.Timeout(connect=min(self.config.timeout, left), read=min(self.config.timeout, left))
        try:
            return self.http.request("GET", url, preload_content=False, redirect=False, retries=False, timeout=wait)
        except urllib3.exceptions.LocationValueError as err:
            raise FetchError("bad_url", f"{url!r}: {err}") from err
        except urllib3.exceptions.TimeoutError as err:
            raise FetchError("timeout", str(err), retry=True) from err
        except urllib3.exceptions.HTTPError as err:
            raise FetchError("connection", str(err), retry=True) from err

    def _read(self, response: urllib3.BaseHTTPResponse, deadline: float) -> bytes:
        """The body, read as it arrives (`read1`: every byte counted, the deadline checked between reads);
        on a failure the connection is closed, not drained."""
        limit = self.config.max_bytes
        declared = response.headers.get("Content-Length", "")
        chunks, size = [], 0
        try:
            if declared.isdigit() and int(declared) > limit:
                raise FetchError("too_large", f"Content-Length {declared} > {limit}")
            while chunk := response.read1(1 << 16):
                size += len(chunk)
                chunks.append(chunk)
                if size > limit:
                    raise FetchError("too_large", f"body over {limit} bytes")
                if time.monotonic() > deadline:
                    raise FetchError("deadline", f"after {size} of {declared or '?'} bytes: over the "
                                                 f"{self.config.deadline:g} s deadline for one photo")
        except urllib3.exceptions.TimeoutError as err:
            response.close()
            raise FetchError("timeout", f"after {size} of {declared or '?'} bytes: {err}", retry=True) from err
        except urllib3.exceptions.HTTPError as err:
            response.close()
            reason = "incomplete_body" if "IncompleteRead" in repr(err) else "connection"
            raise FetchError(reason, f"after {size} of {declared or '?'} bytes: {err}", retry=True) from err
        except FetchError:
            response.close()
            raise
        return b"".join(chunks)


def is_placeholder(url: str) -> bool:
    """Whether a URL is Flickr's "photo unavailable" placeholder image."""
    return bool(PLACEHOLDER_RE.search(urlsplit(url).path))


def _redirect_target(url: str, location: Optional[str]) -> str:
    if not location:
        raise FetchError("bad_redirect", f"redirect from {url} without a Location header")
    target = urljoin(url, location)
    if is_placeholder(target):
        raise FetchError("unavailable", f"redirected to {target}")
    return target


def _status_error(response: urllib3.BaseHTTPResponse) -> FetchError:
    status = response.status
    after = response.headers.get("Retry-After", "")
    retry_after = float(after) if after.isdigit() else None
    retry = status >= 500 or status in (408, 429)
    return FetchError(f"http_{status}", f"HTTP {status} {response.reason or ''}".strip(), retry=retry,
                      retry_after=retry_after)
