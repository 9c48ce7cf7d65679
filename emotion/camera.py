"""Frames from an IP camera (MJPEG or snapshot over HTTP(S), or RTSP), behind a network safety policy."""

import base64
import contextlib
import http.client
import io
import ipaddress
import math
import os
import re
import socket
import ssl
import string
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, partial
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

import cv2
import numpy as np

from .images import MAX_SIDE, ImageError, downscale_to, load_image

ALLOW_PRIVATE_ENV = "EMOTION_ALLOW_PRIVATE_CAMERAS"  # "1": allow loopback/LAN cameras (local use, tests)
SCHEMES = {"http": 80, "https": 443, "rtsp": 554}
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 10.0  # longest silence tolerated from a camera before giving up
MAX_DURATION_S = 600.0  # a stream ends after this, so a forgotten tab cannot hold a connection forever
MAX_FRAME_BYTES = 8 * 1024 * 1024  # a 4K camera JPEG is 1-3 MB
SNAPSHOT_INTERVAL_S = 0.2  # snapshot URLs are polled at most 5 times a second
MAX_REDIRECTS = 3
MAX_BAD_FRAMES = 10  # consecutive undecodable frames before we call the stream broken
_POLL_S = 0.1  # how often a blocked read checks whether it should stop
_CHUNK = 64 * 1024

# Cloud metadata services are never cameras: refused even when private addresses are allowed.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "169.254.170.2",  # AWS ECS task credentials
        "168.63.129.16",  # Azure wire server (a public-looking address)
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "fd00:ec2::254",  # AWS over IPv6
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Not public, checked by prefix: Python's ipaddress flags depend on its build (3.11.7 calls 192.0.0.8 and fec0::1
# global). The IANA IPv4 and IPv6 Special-Purpose Address Registries (as of 2025), every entry, even those marked
# globally reachable (anycast, relay and AS112 services are not cameras); multicast, class E and old site-local too.
SPECIAL_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.31.196.0/24", "192.52.193.0/24", "192.88.99.0/24", "192.168.0.0/16",
        "192.175.48.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "100:0:0:1::/64",
        "2001::/23", "2001:db8::/32", "2002::/16", "2620:4f:8000::/48", "3fff::/20", "5f00::/16", "fc00::/7",
        "fe80::/10", "fec0::/10", "ff00::/8",
    )
)
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")  # the only IPv6 block handed out for public use

NO_URL = "Please enter the camera's address, for example http://203.0.113.7/video.mjpg."
BAD_URL = "This camera address is not valid. Check it for typing mistakes."
BAD_SCHEME = "Only camera addresses starting with http://, https:// or rtsp:// are supported."
UNKNOWN_HOST = "We could not find the camera's host name. Check the address."
NOT_ALLOWED = (
    "For safety, this app does not connect to local, private or cloud-internal network addresses. "
    f"To use a camera on your own network, run the app yourself with {ALLOW_PRIVATE_ENV}=1."
)
RTSP_NOT_ALLOWED = (
    "For safety, this app opens rtsp:// cameras only when you run it yourself with "
    f"{ALLOW_PRIVATE_ENV}=1: an RTSP camera can redirect the app to addresses it must not reach. "
    "Use the camera's HTTP MJPEG or snapshot address instead."
)
REFUSED = "The camera refused the connection. Check the address and port, and that the camera is on."
TIMED_OUT = "The camera did not answer in time. Check the address and your network."
UNREACHABLE = "We could not reach the camera. Check the address and your network."
TLS_FAILED = "We could not open a secure (https) connection to the camera: its certificate was not accepted."
NEEDS_LOGIN = (
    "The camera needs a user name and password, or refused the ones given. "
    "Put them in the address like this: http://user:password@camera-address/..."
)
NOT_FOUND = "The camera has nothing at this address (HTTP 404). Check the path in its manual."
NOT_A_CAMERA = "This address does not send camera pictures. Look up the camera's MJPEG, snapshot or RTSP address."
WEB_PAGE = "This address shows a web page, not camera pictures. Look up the camera's MJPEG, snapshot or RTSP address."
TOO_MANY_REDIRECTS = "The camera address redirected us too many times."
ENDED = "The camera stream ended."
STALLED = "The camera stopped sending pictures."
LOST = "The connection to the camera was lost."
TOO_BIG = "The camera sent a picture too large for us to process."
BAD_FRAMES = "The camera sent pictures we could not read."
RTSP_FAILED = "We could not open the RTSP stream: the camera may be unreachable, or the user name or password wrong."

_SOI = b"\xff\xd8\xff"  # JPEG start-of-image marker and the first byte of the next marker
_CONTENT_LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*(\d{1,12})", re.IGNORECASE)
_SECRET_PARAM = re.compile(r"pass|pwd|token|secret|key|auth|sig|session|cred|user|login", re.IGNORECASE)
_URL_SAFE = string.punctuation  # with letters and digits: printable ASCII stays, the rest is %-encoded

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CameraError(RuntimeError):
    """A camera we cannot use; the message is written for the person who typed the address."""


@dataclass(frozen=True, repr=False)
class CameraTarget:
    """A camera URL that passed the safety policy, pinned to the address that was checked."""

    url: str  # as typed; may hold credentials, so never log it (see redact_url)
    scheme: str
    host: str  # ASCII host name, for the Host header and TLS certificate checks
    port: int
    ip: str  # the checked address: connect here, never re-resolve `host` (DNS rebinding)
    path: str  # path and query, for the HTTP request line
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        return f"CameraTarget({redact_url(self.url)!r}, ip={self.ip!r})"


def validate_camera_url(url: str, *, allow_private: bool | None = None) -> CameraTarget:
    """Check `url` against the safety policy and resolve it, or raise CameraError.

    Only http, https and rtsp are allowed, rtsp only with `allow_private` (default: the
    EMOTION_ALLOW_PRIVATE_CAMERAS environment variable is "1"). Every address the host resolves to must be
    public (see SPECIAL_NETWORKS) unless `allow_private`; cloud metadata addresses are always refused.
    Host names go through the system resolver.
    """
    if not isinstance(url, str) or not url.strip():
        raise CameraError(NO_URL)
    url = url.strip()
    if any(ord(char) < 33 or ord(char) == 127 for char in url):  # also stops header injection
        raise CameraError(BAD_URL)
    try:
        parts = urlsplit(url)
        port = parts.port
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError) as exc:
        raise CameraError(BAD_URL) from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise CameraError(BAD_SCHEME)
    if not host or port == 0:
        raise CameraError(BAD_URL)
    port = port or SCHEMES[scheme]
    if allow_private is None:
        allow_private = os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes")
    if scheme == "rtsp" and not allow_private:
        # FFmpeg's RTSP client follows the camera's redirects itself (to any address, names resolved by FFmpeg),
        # and none of its options turns that off, so the address checks below could not hold for RTSP.
        raise CameraError(RTSP_NOT_ALLOWED)
    addresses = _resolve(host, port)
    if any(_refused(address, allow_private) for address in addresses):
        raise CameraError(NOT_ALLOWED)
    path = quote(parts.path or "/", safe=_URL_SAFE)  # non-ASCII becomes %XX; http.client needs ASCII
    if parts.query:
        path += "?" + quote(parts.query, safe=_URL_SAFE)
    username = None if parts.username is None else unquote(parts.username)
    password = None if parts.password is None else unquote(parts.password)
    return CameraTarget(url, scheme, host, port, _format_ip(addresses[0]), path, username, password)


def redact_url(url: str) -> str:
    """`url` safe to log or show: user:password and secret-looking query values become ***."""
    try:
        parts = urlsplit(url.strip())
        if not parts.netloc:  # "http:user:pass@host" and other oddities: show nothing
            raise ValueError
        netloc = parts.netloc
        if "@" in netloc:
            netloc = "***@" + netloc.rpartition("@")[2]
        query = "&".join(_redact_param(param) for param in parts.query.split("&")) if parts.query else ""
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except (ValueError, AttributeError, TypeError):
        return "(hidden camera address)"


def iter_camera_frames(
    url: str,
    *,
    frame_skip: int = 0,
    max_duration: float = MAX_DURATION_S,
    stop_event: threading.Event | None = None,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    read_timeout: float = READ_TIMEOUT_S,
    max_frame_bytes: int = MAX_FRAME_BYTES,
    snapshot_interval: float = SNAPSHOT_INTERVAL_S,
) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames (longest side <= images.MAX_SIDE) from a camera URL.

    Handles MJPEG (multipart/x-mixed-replace) and snapshot (image/jpeg, image/png) URLs over HTTP(S),
    and rtsp:// via OpenCV's FFmpeg backend. Yields one frame in every `frame_skip + 1`, and ends
    quietly after `max_duration` seconds or soon after `stop_event` is set. The URL is validated
    here, before any connection; every failure is a CameraError with a message for the user.
    """
    if frame_skip < 0:
        raise ValueError("frame_skip must be >= 0")
    if not math.isfinite(max_duration) or max_duration <= 0:  # NaN would never end the stream
        raise ValueError("max_duration must be a finite number of seconds above 0")
    target = validate_camera_url(url)
    deadline = time.monotonic() + max_duration

    def should_stop() -> bool:
        return (stop_event is not None and stop_event.is_set()) or time.monotonic() >= deadline

    options = _Options(connect_timeout, read_timeout, max_frame_bytes, snapshot_interval, should_stop)
    frames = _rtsp_frames(target, options) if target.scheme == "rtsp" else _http_frames(target, options)
    return _decoded(frames, frame_skip, should_stop)


# --- safety policy -------------------------------------------------------------------------------


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [_address(info[4]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
    except (OSError, UnicodeError, ValueError) as exc:
        raise CameraError(UNKNOWN_HOST) from exc
    if not addresses:
        raise CameraError(UNKNOWN_HOST)
    return addresses


def _address(sockaddr: tuple) -> IPAddress:
    """The address of a getaddrinfo sockaddr, keeping an IPv6 scope (needed to connect to fe80::)."""
    host = sockaddr[0]
    if len(sockaddr) == 4 and sockaddr[3] and "%" not in host:
        host = f"{host}%{sockaddr[3]}"
    return ipaddress.ip_address(host)


def _forms(address: IPAddress) -> list[IPAddress]:
    """The address without any IPv6 scope, plus any IPv4 address carried inside (6to4, Teredo, NAT64)."""
    address = type(address)(int(address))  # drop "%scope", which would dodge the equality checks
    if isinstance(address, ipaddress.IPv4Address):
        return [address]
    if address.ipv4_mapped:  # ::ffff:a.b.c.d is only another spelling of a.b.c.d
        return [address.ipv4_mapped]
    embedded = [address.sixtofour, *(address.teredo or ())]
    if address in _NAT64:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF))
    return [address, *(inner for inner in embedded if inner is not None)]


def _refused(address: IPAddress, allow_private: bool) -> bool:
    forms = _forms(address)
    if any(form in METADATA_ADDRESSES for form in forms):
        return True
    return not (allow_private or all(_public(form) for form in forms))


def _public(address: IPAddress) -> bool:
    """Whether `address` (no scope) is a public unicast address, by SPECIAL_NETWORKS and by Python's flags both."""
    if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST_V6:
        return False
    if any(address in network for network in SPECIAL_NETWORKS if network.version == address.version):
        return False
    return address.is_global and not address.is_multicast and not address.is_reserved


def _format_ip(address: IPAddress) -> str:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def _redact_param(param: str) -> str:
    name, sep, value = param.partition("=")
    return f"{name}=***" if sep and value and _SECRET_PARAM.search(unquote(name)) else param


# --- HTTP(S) -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    connect_timeout: float
    read_timeout: float
    max_frame_bytes: int
    snapshot_interval: float
    should_stop: Callable[[], bool]


class _StoppableReader(io.RawIOBase):
    """Socket reads that end (as EOF) once should_stop() is true, and raise TimeoutError after
    read_timeout idle seconds. (A plain socket timeout would leave http.client's reader unusable.)"""

    def __init__(self, sock: socket.socket, options: _Options):
        super().__init__()
        self._sock, self._options = sock, options
        sock.settimeout(_POLL_S)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        give_up = time.monotonic() + self._options.read_timeout
        while not self._options.should_stop():
            try:
                return self._sock.recv_into(buffer)
            except TimeoutError:
                if time.monotonic() >= give_up:
                    raise
        return 0


class _StoppableSocket:
    """Just enough of a socket for http.client; its responses read through _StoppableReader."""

    def __init__(self, sock: socket.socket, options: _Options):
        self._sock, self._options = sock, options

    def sendall(self, data: bytes) -> None:
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", *args, **kwargs) -> io.BufferedReader:
        return io.BufferedReader(_StoppableReader(self._sock, self._options))

    def close(self) -> None:
        pass  # the real socket belongs to _http_frames, which closes it


@cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _connect(target: CameraTarget, timeout: float) -> socket.socket:
    sock = socket.create_connection((target.ip, target.port), timeout=timeout)
    if target.scheme == "https":
        # TCP goes to the checked IP while SNI and certificate checks use the host name as typed.
        sock = _tls_context().wrap_socket(sock, server_hostname=target.host)
    return sock


def _request(sock: socket.socket, target: CameraTarget, options: _Options) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(target.host, target.port)
    connection.sock = _StoppableSocket(sock, options)
    host = f"[{target.host}]" if ":" in target.host else target.host
    headers = {
        "Host": host if target.port == SCHEMES[target.scheme] else f"{host}:{target.port}",
        "Accept": "multipart/x-mixed-replace, image/jpeg, image/*",
        "User-Agent": "emotion-camera/1",
        "Connection": "close",
    }
    if target.username is not None:
        credentials = f"{target.username}:{target.password or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
    connection.request("GET", target.path, headers=headers)
    return connection.getresponse()


def _network_error(exc: BaseException) -> CameraError:
    if isinstance(exc, ssl.SSLError):
        return CameraError(TLS_FAILED)
    if isinstance(exc, ConnectionRefusedError):
        return CameraError(REFUSED)
    if isinstance(exc, TimeoutError):
        return CameraError(TIMED_OUT)
    if isinstance(exc, (http.client.HTTPException, ConnectionResetError)):
        return CameraError(NOT_A_CAMERA)
    return CameraError(UNREACHABLE)


def _http_get(target: CameraTarget, options: _Options) -> tuple[socket.socket, http.client.HTTPResponse]:
    """GET the camera URL and return the socket and a 2xx response; redirects are re-validated."""
    for _ in range(MAX_REDIRECTS + 1):
        sock = None
        try:
            sock = _connect(target, options.connect_timeout)
            response = _request(sock, target, options)
        except (OSError, http.client.HTTPException) as exc:
            if sock is not None:
                sock.close()
            raise _network_error(exc) from exc
        location = response.getheader("Location")
        if 200 <= response.status < 300:
            return sock, response
        sock.close()
        if response.status in (301, 302, 303, 307, 308) and location:
            target = validate_camera_url(urljoin(target.url, location))
        elif response.status in (401, 403):
            raise CameraError(NEEDS_LOGIN)
        elif response.status == 404:
            raise CameraError(NOT_FOUND)
        else:
            raise CameraError(f"The camera answered with an error (HTTP {response.status}).")
    raise CameraError(TOO_MANY_REDIRECTS)


def _is_snapshot(response: http.client.HTTPResponse) -> bool:
    """True for a single picture, False for a stream of them; CameraError for anything else."""
    content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
    if content_type.startswith("image/"):
        return True
    if content_type.startswith("multipart/"):
        return False
    # Some cameras (and ffmpeg's server) label pictures as octet-stream or not at all; a stream
    # never has a length.
    if content_type in ("", "application/octet-stream"):
        return response.length is not None
    raise CameraError(WEB_PAGE if "html" in content_type else NOT_A_CAMERA)


def _http_frames(target: CameraTarget, options: _Options) -> Iterator[Callable[[], np.ndarray | None]]:
    while True:  # one pass per snapshot; an MJPEG stream stays in its first pass
        started = time.monotonic()
        sock, response = _http_get(target, options)
        try:
            if not _is_snapshot(response):
                # An MJPEG stream: this loop ends only by _jpeg_parts raising CameraError.
                for part in _jpeg_parts(partial(_read_chunk, response), options.max_frame_bytes):
                    yield partial(_decode_frame, part)
            picture = _read_body(response, options.max_frame_bytes)
        finally:
            sock.close()
        yield partial(_decode_frame, picture)
        _sleep(options.snapshot_interval - (time.monotonic() - started), options.should_stop)
        if options.should_stop():
            return


def _read_chunk(response: http.client.HTTPResponse) -> bytes:
    try:
        return response.read1(_CHUNK)
    except TimeoutError as exc:
        raise CameraError(STALLED) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise CameraError(LOST) from exc


def _read_body(response: http.client.HTTPResponse, max_bytes: int) -> bytes:
    if (response.length or 0) > max_bytes:
        raise CameraError(TOO_BIG)
    try:
        body = response.read(max_bytes + 1)
    except TimeoutError as exc:
        raise CameraError(STALLED) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise CameraError(LOST) from exc
    if len(body) > max_bytes:
        raise CameraError(TOO_BIG)
    return body


def _jpeg_parts(read: Callable[[], bytes], max_frame_bytes: int) -> Iterator[bytes]:
    """Yield each JPEG of a multipart/x-mixed-replace stream (or of JPEGs simply concatenated).

    Each picture starts at a JPEG start marker and is sized by its part's Content-Length when there
    is one, else by finding its end marker. Not relying on the boundary string tolerates the many
    cameras that get multipart framing slightly wrong. Each byte is scanned about once: the searches
    resume where the previous chunk's ended, so a hostile stream costs time linear in its length.
    """
    buffer = bytearray()
    while True:
        searched = 0  # buffer[:searched] holds no start marker
        while (start := buffer.find(_SOI, searched)) < 0:
            if len(buffer) > max_frame_bytes:
                raise CameraError(NOT_A_CAMERA)
            searched = max(0, len(buffer) - len(_SOI) + 1)
            _read_more(buffer, read)
        lengths = _CONTENT_LENGTH.findall(buffer, 0, start)
        length = int(lengths[-1]) if lengths and int(lengths[-1]) > 0 else None
        if length is not None and length > max_frame_bytes:
            raise CameraError(TOO_BIG)
        scanner = None if length is not None else _JpegEnd(start)
        while True:
            end = start + length if scanner is None else scanner.find(buffer)
            if end is not None and end <= len(buffer):
                break
            if len(buffer) - start > max_frame_bytes:
                raise CameraError(TOO_BIG)
            _read_more(buffer, read)
        yield bytes(buffer[start:end])
        del buffer[:end]


def _read_more(buffer: bytearray, read: Callable[[], bytes]) -> None:
    chunk = read()
    if not chunk:
        raise CameraError(ENDED)
    buffer += chunk


_FILL = re.compile(rb"\xff+")


class _JpegEnd:
    """Finds the end of the JPEG that starts at a buffer's `start`, as the buffer grows: each call resumes
    where the last one stopped (the buffer may only grow at its end between calls).

    Walks the marker segments up to the first scan, so an end marker inside a segment (such as an
    EXIF thumbnail's) is skipped; inside scan data 0xFF is always escaped, so the next FFD9 is the end.
    """

    def __init__(self, start: int):
        self.position = start + 2  # the next marker to read, or (in the scan) where to search for FFD9
        self.in_scan = False

    def find(self, data: bytearray) -> int | None:
        """Index just past the end of the JPEG, or None if it has not all arrived."""
        i = self.position
        while not self.in_scan:
            if i + 4 > len(data):
                self.position = i
                return None
            marker = data[i + 1]
            if data[i] != 0xFF or marker == 0xDA:  # the first scan (or a broken file): search for the end
                self.in_scan = True
            elif marker == 0xD9:
                return i + 2
            elif marker == 0xFF:  # fill bytes: skip the whole run, to its last 0xFF (the next marker's)
                i = _FILL.match(data, i).end() - 1
            elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
                i += 2
            else:
                i += 2 + (data[i + 2] << 8 | data[i + 3])
        end = data.find(b"\xff\xd9", i)
        if end < 0:
            self.position = max(i, len(data) - 1)  # FFD9 may straddle this chunk and the next
            return None
        return end + 2


def _decode_frame(data: bytes) -> np.ndarray | None:
    try:
        return load_image(data)
    except ImageError:
        return None


def _sleep(seconds: float, should_stop: Callable[[], bool]) -> None:
    wake = time.monotonic() + seconds
    while not should_stop() and (left := wake - time.monotonic()) > 0:
        time.sleep(min(left, _POLL_S))


# --- RTSP and the common frame loop ---------------------------------------------------------------


def _rtsp_frames(target: CameraTarget, options: _Options) -> Iterator[Callable[[], np.ndarray | None]]:
    # FFmpeg would resolve the name again, so give it the checked IP instead (DNS rebinding).
    netloc = urlsplit(target.url).netloc
    credentials = netloc.rpartition("@")[0] + "@" if "@" in netloc else ""
    host = f"[{target.ip}]" if ":" in target.ip else target.ip
    capture = cv2.VideoCapture(
        f"rtsp://{credentials}{host}:{target.port}{target.path}",
        cv2.CAP_FFMPEG,
        [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            round(options.connect_timeout * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            round(options.read_timeout * 1000),
        ],
    )
    try:
        if not capture.isOpened():
            raise CameraError(RTSP_FAILED)
        while True:
            if not capture.grab():  # blocks at most read_timeout, so stopping can take that long
                raise CameraError(ENDED)
            yield partial(_retrieve, capture)
    finally:
        capture.release()


def _retrieve(capture: cv2.VideoCapture) -> np.ndarray | None:
    ok, frame = capture.retrieve()
    if not ok or frame is None:
        return None
    return downscale_to(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), MAX_SIDE)


def _decoded(
    frames: Iterator[Callable[[], np.ndarray | None]], frame_skip: int, should_stop: Callable[[], bool]
) -> Iterator[np.ndarray]:
    """Decode one frame in every frame_skip + 1 (sources yield decoders, so skipped frames cost nothing)."""
    bad = 0
    with contextlib.closing(frames):
        if should_stop():
            return
        try:
            for index, decode in enumerate(frames):
                if should_stop():
                    return
                if index % (frame_skip + 1):
                    continue
                frame = decode()
                if frame is None:
                    bad += 1
                    if bad >= MAX_BAD_FRAMES:
                        raise CameraError(BAD_FRAMES)
                    continue
                bad = 0
                yield frame
        except CameraError:
            if should_stop():  # a read cut short by stopping looks like the stream ending
                return
            raise
