import base64
import contextlib
import http.server
import io
import ipaddress
import itertools
import shutil
import socket
import ssl
import string
import subprocess
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import free_port
from emotion import camera
from emotion.camera import (
    ALLOW_PRIVATE_ENV,
    BAD_FRAMES,
    BAD_SCHEME,
    BAD_URL,
    ENDED,
    METADATA_ADDRESSES,
    NEEDS_LOGIN,
    NO_URL,
    NOT_A_CAMERA,
    NOT_ALLOWED,
    NOT_FOUND,
    REFUSED,
    RTSP_FAILED,
    RTSP_NOT_ALLOWED,
    STALLED,
    TIMED_OUT,
    TLS_FAILED,
    TOO_BIG,
    TOO_MANY_REDIRECTS,
    UNKNOWN_HOST,
    WEB_PAGE,
    CameraError,
    CameraTarget,
    iter_camera_frames,
    redact_url,
    validate_camera_url,
)

# Names the fake resolver knows; everything else must be an IP literal (no DNS in tests).
FAKE_DNS = {
    "localhost": ["127.0.0.1"],
    "camera.example": ["93.184.215.14"],
    "camera.test": ["127.0.0.1"],
    "camera.internal": ["10.1.2.3"],
    "rebind.example": ["93.184.215.14", "192.168.0.10"],
    "metadata.example": ["169.254.169.254"],
    "scoped-metadata.example": ["fd00:ec2::254%1"],
    "v6.example": ["2001:4860:4860::8888"],
}


def fake_getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    if host in FAKE_DNS:
        return [
            (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
            for ip in FAKE_DNS[host]
        ]
    return REAL_GETADDRINFO(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)


REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture(autouse=True)
def no_dns(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.delenv(ALLOW_PRIVATE_ENV, raising=False)


@pytest.fixture
def allow_private(monkeypatch):
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "1")


# --- URL validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, scheme, host, port, ip, path",
    [
        ("http://93.184.215.14/video.mjpg", "http", "93.184.215.14", 80, "93.184.215.14", "/video.mjpg"),
        ("HTTPS://camera.example:8443/snap.jpg?size=2", "https", "camera.example", 8443, "93.184.215.14", "/snap.jpg?size=2"),
        ("http://[2001:4860:4860::8888]:81", "http", "2001:4860:4860::8888", 81, "2001:4860:4860::8888", "/"),
        ("http://v6.example/cam", "http", "v6.example", 80, "2001:4860:4860::8888", "/cam"),
        ("http://[::ffff:8.8.8.8]/", "http", "::ffff:8.8.8.8", 80, "8.8.8.8", "/"),
        ("  http://8.8.8.8/caf\u00e9  ", "http", "8.8.8.8", 80, "8.8.8.8", "/caf%C3%A9"),
    ],
)
def test_public_cameras_are_accepted_and_pinned(url, scheme, host, port, ip, path):
    target = validate_camera_url(url)
    assert (target.scheme, target.host, target.port, target.ip, target.path) == (scheme, host, port, ip, path)


def test_rtsp_is_accepted_and_pinned_when_private_cameras_are_allowed(allow_private):
    target = validate_camera_url("rtsp://admin:pw@camera.example/live")
    assert (target.scheme, target.host, target.port, target.ip, target.path) == (
        "rtsp", "camera.example", 554, "93.184.215.14", "/live"
    )


@pytest.mark.parametrize("url", ["rtsp://camera.example/live", "RTSP://8.8.8.8:8554/stream", "rtsp://10.0.0.5/live"])
def test_rtsp_is_refused_unless_private_cameras_are_allowed(url, monkeypatch):
    # FFmpeg follows an RTSP camera's redirects itself, past the address checks: a public camera could send the
    # app to an internal one. So rtsp:// is refused before any lookup or connection, public or not.
    def no_lookup(*args, **kwargs):
        raise AssertionError("resolved a host name for a refused rtsp:// address")

    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    with pytest.raises(CameraError) as caught:
        validate_camera_url(url)
    assert str(caught.value) == RTSP_NOT_ALLOWED
    assert ALLOW_PRIVATE_ENV in RTSP_NOT_ALLOWED


def test_credentials_are_parsed_but_never_shown(allow_private):
    target = validate_camera_url("rtsp://admin:p%40ss%3Aword@camera.example/live?token=abc")
    assert (target.username, target.password) == ("admin", "p@ss:word")
    assert "p%40ss" not in repr(target) and "abc" not in repr(target) and "admin" not in repr(target)


@pytest.mark.parametrize(
    "url, message",
    [
        ("", NO_URL),
        ("   ", NO_URL),
        (None, NO_URL),
        ("file:///etc/passwd", BAD_SCHEME),
        ("FILE:///etc/passwd", BAD_SCHEME),
        ("data:image/jpeg;base64,/9j/4AAQ", BAD_SCHEME),
        ("/dev/video0", BAD_SCHEME),
        ("C:\\cams\\cam.mjpg", BAD_SCHEME),
        ("ftp://8.8.8.8/cam", BAD_SCHEME),
        ("javascript:alert(1)", BAD_SCHEME),
        ("gopher://8.8.8.8:70/", BAD_SCHEME),
        ("8.8.8.8/cam.mjpg", BAD_SCHEME),
        ("http://", BAD_URL),
        ("http:///cam.mjpg", BAD_URL),
        ("http://8.8.8.8:99999/", BAD_URL),
        ("http://8.8.8.8:0/", BAD_URL),
        ("http://8.8.8.8:port/", BAD_URL),
        ("http://[::1/", BAD_URL),
        ("http://8.8.8.8/a b", BAD_URL),
        ("http://8.8.8.8/\r\nHost: evil", BAD_URL),
        ("http://8.8.8.8/\x00", BAD_URL),
        ("http://" + "a" * 64 + ".example/", BAD_URL),
        ("http://no-such-camera.example/", UNKNOWN_HOST),
        ("http://127.0.0.1/", NOT_ALLOWED),
        ("http://127.0.0.1:8080/cam.mjpg", NOT_ALLOWED),
        ("http://localhost/", NOT_ALLOWED),
        ("http://[::1]/", NOT_ALLOWED),
        ("http://0.0.0.0/", NOT_ALLOWED),
        ("http://[::]/", NOT_ALLOWED),
        ("http://10.0.0.5/", NOT_ALLOWED),
        ("http://172.16.3.4/", NOT_ALLOWED),
        ("http://192.168.1.10/", NOT_ALLOWED),
        ("http://100.64.0.1/", NOT_ALLOWED),
        ("http://169.254.1.1/", NOT_ALLOWED),
        ("http://[fe80::1]/", NOT_ALLOWED),
        ("http://[fd12:3456::1]/", NOT_ALLOWED),
        ("http://224.0.0.1/", NOT_ALLOWED),
        ("http://[ff02::1]/", NOT_ALLOWED),
        ("http://240.0.0.1/", NOT_ALLOWED),
        ("http://255.255.255.255/", NOT_ALLOWED),
        ("http://169.254.169.254/latest/meta-data/", NOT_ALLOWED),
        ("http://[fd00:ec2::254]/", NOT_ALLOWED),
        ("http://100.100.100.200/", NOT_ALLOWED),
        ("http://168.63.129.16/", NOT_ALLOWED),
        ("http://[::ffff:127.0.0.1]/", NOT_ALLOWED),
        ("http://[::ffff:169.254.169.254]/", NOT_ALLOWED),
        ("http://[2002:7f00:1::]/", NOT_ALLOWED),  # 6to4 wrapping of 127.0.0.1
        ("http://[64:ff9b::a00:1]/", NOT_ALLOWED),  # NAT64 wrapping of 10.0.0.1
        ("http://2130706433/", NOT_ALLOWED),  # 127.0.0.1 as one number
        ("http://0x7f.1/", NOT_ALLOWED),
        ("http://127.1/", NOT_ALLOWED),
        ("http://camera.internal/", NOT_ALLOWED),
        ("http://rebind.example/", NOT_ALLOWED),  # one private address is enough to refuse
        ("http://metadata.example/", NOT_ALLOWED),
        ("rtsp://192.168.1.64:554/Streaming/Channels/101", RTSP_NOT_ALLOWED),
        ("http://[fec0::1]/", NOT_ALLOWED),  # old site-local IPv6, "global" to Python 3.11.7
        ("http://192.0.0.8/", NOT_ALLOWED),  # IPv4 dummy address, "global" to older Python builds
    ],
)
def test_refused_urls(url, message):
    with pytest.raises(CameraError) as caught:
        validate_camera_url(url)
    assert str(caught.value) == message


# One address inside every entry of the IANA IPv4 and IPv6 Special-Purpose Address Registries (2025), plus
# multicast and unassigned IPv6: none may be taken for a public camera, whatever this Python's ipaddress tables say.
SPECIAL_ADDRESSES = [
    "0.1.2.3", "10.9.8.7", "100.64.0.1", "127.0.0.2", "169.254.3.4", "172.31.255.1", "192.0.0.8", "192.0.0.9",
    "192.0.0.10", "192.0.0.170", "192.0.0.171", "192.0.2.1", "192.31.196.1", "192.52.193.1", "192.88.99.1",
    "192.168.0.1", "192.175.48.1", "198.18.0.1", "198.19.255.1", "198.51.100.1", "203.0.113.1", "224.0.0.251",
    "239.255.255.250", "240.0.0.1", "255.255.255.255",
    "::", "::1", "::2", "64:ff9b::808:808", "64:ff9b:1::1", "100::1", "100:0:0:1::1", "2001::1", "2001:1::1",
    "2001:2::1", "2001:3::1", "2001:4:112::1", "2001:10::1", "2001:20::1", "2001:30::1", "2001:db8::1",
    "2002:808:808::1", "2620:4f:8000::1", "3fff::1", "3fff:fff::1", "5f00::1", "fc00::1", "fd00::1", "fe80::1",
    "fec0::1", "feff::1", "ff02::1", "ff0e::1", "4000::1", "1000::1",
]


@pytest.mark.parametrize("address", SPECIAL_ADDRESSES)
def test_every_special_purpose_address_is_refused(address):
    with pytest.raises(CameraError) as caught:
        validate_camera_url(f"http://{format_host(ipaddress.ip_address(address))}/cam.mjpg")
    assert str(caught.value) == NOT_ALLOWED


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/", "http://localhost/", "http://[::1]/", "rtsp://192.168.1.64/live", "http://[fe80::1%lo]/"],
)
def test_private_cameras_allowed_by_the_environment(allow_private, url):
    assert validate_camera_url(url).scheme in ("http", "rtsp")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/",
        "http://[fd00:ec2::254]/",
        "http://scoped-metadata.example/",  # an IPv6 zone must not dodge the check
        "http://[::ffff:169.254.169.254]/",
        "http://metadata.example/",
        "http://100.100.100.200/",
    ],
)
def test_cloud_metadata_is_refused_even_when_private_is_allowed(allow_private, url):
    with pytest.raises(CameraError, match="For safety"):
        validate_camera_url(url)


@pytest.mark.parametrize("value, allowed", [("1", True), ("true", True), ("0", False), ("", False), ("no", False)])
def test_environment_variable_values(monkeypatch, value, allowed):
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, value)
    if allowed:
        assert validate_camera_url("http://10.0.0.5/").ip == "10.0.0.5"
    else:
        with pytest.raises(CameraError, match="For safety"):
            validate_camera_url("http://10.0.0.5/")


def test_explicit_allow_private_overrides_the_environment():
    assert validate_camera_url("http://10.0.0.5/", allow_private=True).ip == "10.0.0.5"


# --- fuzzing the validator (no network: unknown names fail in the fake resolver) -----------------

SPECIAL_HOSTS = [
    *FAKE_DNS,
    "0x7f.1",
    "2130706433",
    "127.1",
    "0",
    "[::ffff:127.0.0.1]",
    "[::ffff:169.254.169.254]",
    "[fd00:ec2::254]",
    "[2002:a9fe:a9fe::]",
    "169.254.169.254",
    "8.8.8.8",
]


def format_host(address) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


plausible_hosts = st.one_of(
    st.sampled_from(SPECIAL_HOSTS),
    st.ip_addresses(v=4).map(format_host),  # biased towards special-purpose ranges
    st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address).map(format_host),  # mostly public
    st.ip_addresses(v=6).map(format_host),
)
hosts = st.one_of(plausible_hosts, st.text(max_size=20))
printable = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=20)
structured_urls = st.builds(
    lambda scheme, userinfo, host, port, path: f"{scheme}://{userinfo}{host}{port}{path}",
    st.one_of(
        st.sampled_from(["http", "https", "rtsp", "HTTP"]),
        st.sampled_from(["file", "data", "ftp", "javascript", "rtsps", "", "http:"]),
    ),
    st.one_of(
        st.just(""),
        st.text(string.ascii_lowercase + string.digits + "%:", min_size=1, max_size=10).map("{}@".format),
    ),
    hosts,
    st.one_of(st.just(""), st.integers(-5, 70000).map(":{}".format), st.text(max_size=4).map(":{}".format)),
    st.one_of(st.just(""), printable.map("/{}".format), st.text(max_size=20).map("/{}".format)),
)
plausible_urls = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(["http", "https", "rtsp"]),
    plausible_hosts,
    st.one_of(st.just(""), st.integers(1, 65535).map(":{}".format)),
    printable.map("/{}".format),
)
any_urls = st.one_of(st.text(max_size=60), structured_urls, plausible_urls)


def is_safe(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return address.is_global and not address.is_multicast and address not in METADATA_ADDRESSES


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(any_urls)
def test_fuzz_validate_camera_url(url):
    try:
        target = validate_camera_url(url)
    except CameraError as error:
        event(str(error)[:30])
        return
    event("accepted")
    assert isinstance(target, CameraTarget)
    assert target.scheme in ("http", "https")
    assert not url.strip().lower().startswith(("file:", "data:"))
    assert is_safe(target.ip), (url, target.ip)
    assert target.path.startswith("/") and target.path.isascii() and " " not in target.path


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(any_urls)
def test_fuzz_validate_with_private_allowed(url):
    try:
        target = validate_camera_url(url, allow_private=True)
    except CameraError:
        return
    assert target.scheme in ("http", "https", "rtsp")
    address = ipaddress.ip_address(target.ip.split("%")[0])
    assert address not in METADATA_ADDRESSES


# --- redaction -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, expected",
    [
        ("rtsp://admin:secret@1.2.3.4:554/live?channel=1", "rtsp://***@1.2.3.4:554/live?channel=1"),
        ("http://user@cam.example/x", "http://***@cam.example/x"),
        ("http://cam.example/x?token=abc&size=2", "http://cam.example/x?token=***&size=2"),
        ("http://cam.example/cgi?user=admin&pwd=hunter2&ch=1", "http://cam.example/cgi?user=***&pwd=***&ch=1"),
        ("http://cam.example/x?API_KEY=k#frag", "http://cam.example/x?API_KEY=***"),
        ("http://a:b:c@d@cam.example/", "http://***@cam.example/"),
        ("http://cam.example/plain", "http://cam.example/plain"),
        ("http:user:secret@cam.example", "(hidden camera address)"),
        ("user:secret@cam.example", "(hidden camera address)"),
        ("http://[::1", "(hidden camera address)"),
        ("", "(hidden camera address)"),
        (None, "(hidden camera address)"),
    ],
)
def test_redact_url(url, expected):
    assert redact_url(url) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["http", "https", "rtsp", "ftp", ""]),
    st.text(alphabet=string.ascii_lowercase, max_size=8),
    st.text(alphabet=string.ascii_lowercase + string.digits + "!$&'()*+,;=:", min_size=1, max_size=12),
    st.sampled_from(["cam.example", "1.2.3.4", "[::1]", "h:8080"]),
    st.text(alphabet=string.ascii_lowercase + "/?&=#", max_size=20),
)
def test_fuzz_redact_url_never_leaks_the_password(scheme, user, password, host, rest):
    secret = "Z" + password  # no other part of the URL contains a "Z"
    assert "Z" not in redact_url(f"{scheme}://{user}:{secret}@{host}/{rest}")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_fuzz_redact_url_never_raises(text):
    assert isinstance(redact_url(text), str)


# --- a scripted camera: tiny HTTP server on loopback ---------------------------------------------


def jpeg(level: int, size=(32, 24), exif: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    options = {"exif": exif} if exif else {}
    Image.new("RGB", size, (level, level, level)).save(buffer, "JPEG", quality=95, **options)
    return buffer.getvalue()


# An APP1 segment holding a fake embedded JPEG (SOI ... EOI): a naive end-marker search stops early.
THUMBNAIL_EXIF = b"Exif\x00\x00" + b"\xff\xd8\xff\xe0 thumbnail \xff\xd9" * 3
LEVELS = [10 * i for i in range(20)]


FILL_BYTES = 9 * 1024 * 1024  # 0xFF fill bytes after a JPEG start marker: more than camera.MAX_FRAME_BYTES


class CameraHandler(http.server.BaseHTTPRequestHandler):
    closing: threading.Event  # set at teardown, to release handlers that stall on purpose
    client_closed: threading.Event  # set when a stalling handler sees the client close its connection
    snapshots = itertools.count()

    def log_message(self, *args):
        pass

    def send(self, status: int, content_type: str, body: bytes = b"", headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def multipart(self, parts, content_length=True, boundary="frame", content_type=None):
        self.send_response(200)
        self.send_header("Content-Type", content_type or f"multipart/x-mixed-replace; boundary={boundary}")
        self.end_headers()
        for part in parts:
            head = f"--{boundary}\r\nContent-Type: image/jpeg\r\n"
            if content_length:
                head += f"Content-Length: {len(part)}\r\n"
            self.wfile.write(head.encode() + b"\r\n" + part + b"\r\n")
            self.wfile.flush()

    def stall(self) -> None:
        """Send nothing more until the client closes the connection (then set client_closed) or teardown."""
        self.connection.settimeout(0.05)
        while not self.closing.is_set():
            try:
                if not self.connection.recv(1):
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        else:
            return
        self.client_closed.set()

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/snap.jpg":
            self.send(200, "image/jpeg", jpeg(next(self.snapshots) * 10 % 250))
        elif path == "/snap.png":
            buffer = io.BytesIO()
            Image.new("RGB", (40, 30), (0, 200, 0)).save(buffer, "PNG")
            self.send(200, "image/png", buffer.getvalue())
        elif path == "/auth.jpg":
            expected = "Basic " + base64.b64encode(b"admin:p@ss").decode()
            if self.headers.get("Authorization") == expected:
                self.send(200, "image/jpeg", jpeg(99))
            else:
                self.send(401, "text/plain", b"login", {"WWW-Authenticate": 'Basic realm="cam"'})
        elif path == "/forbidden":
            self.send(403, "text/html", b"<h1>no</h1>")
        elif path == "/page":
            self.send(200, "text/html; charset=utf-8", b"<!doctype html><title>Camera</title>")
        elif path == "/json":
            self.send(200, "application/json", b"{}")
        elif path == "/missing":
            self.send(404, "text/plain", b"nope")
        elif path == "/error":
            self.send(500, "text/plain", b"oops")
        elif path == "/redirect":
            self.send(302, "text/plain", headers={"Location": "/snap.jpg"})
        elif path == "/redirect-metadata":
            self.send(302, "text/plain", headers={"Location": "http://169.254.169.254/latest/meta-data/"})
        elif path == "/redirect-loop":
            self.send(302, "text/plain", headers={"Location": "/redirect-loop"})
        elif path == "/numbered":
            self.multipart([jpeg(level) for level in LEVELS])
        elif path == "/numbered-no-length":
            self.multipart([jpeg(level, exif=THUMBNAIL_EXIF) for level in LEVELS], content_length=False)
        elif path == "/bare-jpegs":  # no multipart at all, just JPEGs back to back
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(b"".join(jpeg(level) for level in LEVELS))
        elif path == "/odd-boundary":  # boundary in the header does not match the body
            parts = [jpeg(level) for level in LEVELS[:3]]
            self.multipart(parts, boundary="--myboundary", content_type="multipart/x-mixed-replace;boundary=other")
        elif path == "/ends":
            self.multipart([jpeg(50), jpeg(60)])
        elif path == "/broken-frames":
            self.multipart([b"\xff\xd8\xff\xe0" + bytes(100) + b"\xff\xd9"] * 20)
        elif path == "/huge-frame":
            self.multipart([b"\xff\xd8\xff" + bytes(200_000)])
        elif path == "/huge-frame-no-length":
            self.multipart([b"\xff\xd8\xff\xe0\x00\x04" + b"\x00" * 200_000], content_length=False)
        elif path == "/octet-snapshot":
            self.send(200, "application/octet-stream", jpeg(120))
        elif path == "/huge-snapshot":
            self.send(200, "image/jpeg", b"\xff\xd8\xff" + bytes(200_000))
        elif path == "/no-pictures":
            self.multipart([b"hello " * 50_000], content_length=False)
        elif path == "/stall":  # headers, one frame, then silence
            self.multipart([jpeg(70)])
            self.stall()
        elif path == "/fill-bytes":  # a part that starts a JPEG, then only 0xFF fill bytes (no Content-Length)
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff")
            for _ in range(FILL_BYTES // 65536):
                self.wfile.write(b"\xff" * 65536)
        elif path == "/silent":  # never even answers
            self.closing.wait(10)
        else:
            self.send(404, "text/plain", b"unknown test path")


@contextlib.contextmanager
def scripted_camera(tls: ssl.SSLContext | None = None) -> Iterator[tuple[int, type[CameraHandler]]]:
    """Run the scripted camera on a loopback port (over TLS with `tls`); yields the port and its handler class."""
    handler = type(
        "Handler",
        (CameraHandler,),
        {"closing": threading.Event(), "client_closed": threading.Event(), "snapshots": itertools.count()},
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        handler.closing.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def camera_server(allow_private) -> Iterator[tuple[str, type[CameraHandler]]]:
    """Base URL of the scripted camera, and its handler class (whose events tell what the server saw)."""
    with scripted_camera() as (port, handler):
        yield f"http://127.0.0.1:{port}", handler


@pytest.fixture
def camera_http(camera_server) -> str:
    """Base URL of the scripted camera."""
    return camera_server[0]


def gray_levels(frames) -> list[int]:
    return [int(round(frame.mean())) for frame in frames]


def collect(iterator, limit: int = 100) -> tuple[list[np.ndarray], CameraError | None]:
    """Frames until the iterator ends or fails (with the error), at most `limit`."""
    frames = []
    try:
        for frame in iterator:
            frames.append(frame)
            if len(frames) >= limit:
                break
    except CameraError as error:
        return frames, error
    return frames, None


def assert_rgb_frame(frame, shape=None):
    assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8
    assert frame.ndim == 3 and frame.shape[2] == 3
    if shape:
        assert frame.shape == shape


# --- real MJPEG from ffmpeg ------------------------------------------------------------------------


def test_ffmpeg_mjpeg_stream_gives_rgb_frames(allow_private, mjpeg_server):
    frames = list(itertools.islice(iter_camera_frames(mjpeg_server()), 5))
    assert len(frames) == 5
    for frame in frames:
        assert_rgb_frame(frame, (240, 320, 3))
    # testsrc has coloured bars: the frames are colour, not gray, and they move.
    assert np.abs(frames[0].astype(int)[:, :, 0] - frames[0][:, :, 2]).mean() > 10
    assert any(not np.array_equal(frames[0], frame) for frame in frames[1:])


def test_ffmpeg_stream_labelled_octet_stream(allow_private, mjpeg_server):
    url = mjpeg_server(content_type="application/octet-stream")
    frames = list(itertools.islice(iter_camera_frames(url), 3))
    assert [frame.shape for frame in frames] == [(240, 320, 3)] * 3


def test_ffmpeg_stream_max_duration(allow_private, mjpeg_server):
    started = time.monotonic()
    frames, error = collect(iter_camera_frames(mjpeg_server(), max_duration=0.7))
    elapsed = time.monotonic() - started
    assert error is None
    assert 1 <= len(frames) <= 10  # 10 fps for 0.7 s
    assert elapsed < 4.0  # the stream itself never ends; generous bounds for a busy machine


def test_ffmpeg_stream_stop_event(allow_private, mjpeg_server):
    stop = threading.Event()
    frames = []
    for frame in iter_camera_frames(mjpeg_server(), stop_event=stop):
        frames.append(frame)
        if len(frames) == 2:
            stop.set()
    assert len(frames) == 2


def test_ffmpeg_stream_frame_skip(allow_private, mjpeg_server):
    frames = iter_camera_frames(mjpeg_server(), frame_skip=4)
    next(frames)
    started = time.monotonic()
    next(frames)
    # 1 frame in 5 at 10 fps: the next frame comes about 0.5 s later.
    assert 0.35 <= time.monotonic() - started <= 5.0
    frames.close()


# --- scripted HTTP camera ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/numbered", "/numbered-no-length", "/bare-jpegs"])
def test_every_part_of_a_multipart_stream(camera_http, path):
    frames, error = collect(iter_camera_frames(camera_http + path))
    assert str(error) == ENDED
    assert gray_levels(frames) == pytest.approx(LEVELS, abs=2)
    for frame in frames:
        assert_rgb_frame(frame, (24, 32, 3))


def test_mismatched_boundary_is_tolerated(camera_http):
    frames, error = collect(iter_camera_frames(camera_http + "/odd-boundary"))
    assert gray_levels(frames) == pytest.approx(LEVELS[:3], abs=2) and str(error) == ENDED


@pytest.mark.parametrize("frame_skip", [0, 1, 2, 6])
def test_frame_skip_yields_one_frame_in_n_plus_1(camera_http, frame_skip):
    frames, _ = collect(iter_camera_frames(camera_http + "/numbered", frame_skip=frame_skip))
    assert gray_levels(frames) == pytest.approx(LEVELS[:: frame_skip + 1], abs=2)


def test_negative_frame_skip_is_a_programming_error(camera_http):
    with pytest.raises(ValueError):
        iter_camera_frames(camera_http + "/numbered", frame_skip=-1)


@pytest.mark.parametrize("max_duration", [float("nan"), float("inf"), 0.0, -1.0])
def test_a_duration_that_would_never_end_is_a_programming_error(camera_http, max_duration):
    with pytest.raises(ValueError, match="max_duration"):
        iter_camera_frames(camera_http + "/numbered", max_duration=max_duration)


def test_stream_that_ends(camera_http):
    frames, error = collect(iter_camera_frames(camera_http + "/ends"))
    assert gray_levels(frames) == pytest.approx([50, 60], abs=2)
    assert str(error) == ENDED


@pytest.mark.parametrize("path", ["/snap.jpg", "/redirect"])
def test_snapshot_url_is_polled(camera_http, path):
    started = time.monotonic()
    frames, error = collect(iter_camera_frames(camera_http + path, max_duration=1.0))
    assert error is None and time.monotonic() - started < 4.0
    assert 2 <= len(frames) <= 6  # at most 5 polls a second
    assert len(set(gray_levels(frames))) == len(frames)  # a fresh picture each time


def test_snapshot_labelled_octet_stream(camera_http):
    frames, error = collect(iter_camera_frames(camera_http + "/octet-snapshot", max_duration=0.5))
    assert error is None and len(frames) >= 2
    assert gray_levels(frames)[0] == pytest.approx(120, abs=2)


def test_png_snapshot(camera_http):
    frame = next(iter_camera_frames(camera_http + "/snap.png"))
    assert_rgb_frame(frame, (30, 40, 3))
    assert tuple(frame[0, 0]) == (0, 200, 0)


def test_credentials_in_the_url_are_sent(camera_http):
    url = camera_http.replace("http://", "http://admin:p%40ss@") + "/auth.jpg"
    assert int(round(next(iter_camera_frames(url)).mean())) == pytest.approx(99, abs=2)


@pytest.mark.parametrize(
    "path, message",
    [
        ("/auth.jpg", NEEDS_LOGIN),
        ("/forbidden", NEEDS_LOGIN),
        ("/page", WEB_PAGE),
        ("/json", NOT_A_CAMERA),
        ("/missing", NOT_FOUND),
        ("/error", "The camera answered with an error (HTTP 500)."),
        ("/redirect-metadata", NOT_ALLOWED),
        ("/redirect-loop", TOO_MANY_REDIRECTS),
        ("/broken-frames", BAD_FRAMES),
        ("/no-pictures", NOT_A_CAMERA),
    ],
)
def test_http_failures_have_clear_messages(camera_http, path, message):
    frames, error = collect(iter_camera_frames(camera_http + path, max_frame_bytes=100_000))
    assert frames == []
    assert str(error) == message


@pytest.mark.parametrize("path", ["/huge-frame", "/huge-frame-no-length", "/huge-snapshot"])
def test_frames_over_the_size_limit(camera_http, path):
    frames, error = collect(iter_camera_frames(camera_http + path, max_frame_bytes=100_000))
    assert frames == [] and str(error) == TOO_BIG


def test_wrong_password_is_refused(camera_http):
    url = camera_http.replace("http://", "http://admin:wrong@") + "/auth.jpg"
    with pytest.raises(CameraError, match="user name and password"):
        next(iter_camera_frames(url))


def test_silent_stream_times_out(camera_http):
    started = time.monotonic()
    frames, error = collect(iter_camera_frames(camera_http + "/stall", read_timeout=0.5))
    assert len(frames) == 1 and str(error) == STALLED
    assert time.monotonic() - started < 4.0  # else the 10 s read timeout


def test_server_that_never_answers_times_out(camera_http):
    started = time.monotonic()
    with pytest.raises(CameraError) as caught:
        next(iter_camera_frames(camera_http + "/silent", read_timeout=0.5))
    assert str(caught.value) == TIMED_OUT
    assert time.monotonic() - started < 4.0  # else the 10 s read timeout


def test_stop_event_interrupts_a_stalled_read(camera_http):
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    frames, error = collect(iter_camera_frames(camera_http + "/stall", stop_event=stop))
    assert len(frames) == 1 and error is None
    assert time.monotonic() - started < 4.0  # else the 10 s read timeout


def test_max_duration_interrupts_a_stalled_read(camera_http):
    started = time.monotonic()
    frames, error = collect(iter_camera_frames(camera_http + "/stall", max_duration=0.4))
    assert len(frames) == 1 and error is None
    assert time.monotonic() - started < 4.0  # else the 10 s read timeout


def test_stop_event_already_set(camera_http):
    stop = threading.Event()
    stop.set()
    assert list(iter_camera_frames(camera_http + "/numbered", stop_event=stop)) == []


def test_closing_the_iterator_closes_the_connection(camera_server):
    url, handler = camera_server
    frames = iter_camera_frames(url + "/stall")
    next(frames)
    assert not handler.client_closed.wait(0.3)  # the stream is open, the camera stalls
    frames.close()
    assert handler.client_closed.wait(5)  # the camera saw the connection closed


def test_fill_bytes_after_a_start_marker_cost_linear_time(camera_http):
    # A part that starts a JPEG and then sends only 0xFF fill bytes: the reader once rescanned its whole buffer
    # for every chunk, 40 s of CPU before reaching the 8 MB frame limit. Each byte is now scanned about once.
    started = time.process_time()
    frames, error = collect(iter_camera_frames(camera_http + "/fill-bytes"))
    assert frames == [] and str(error) == TOO_BIG
    assert time.process_time() - started < 8  # about 0.1 s here; the rescanning reader took over 40 s


def test_connection_refused(allow_private):
    with pytest.raises(CameraError) as caught:
        next(iter_camera_frames(f"http://127.0.0.1:{free_port()}/cam.mjpg"))
    assert str(caught.value) == REFUSED


def test_loopback_refused_without_the_environment_variable(camera_http, monkeypatch):
    monkeypatch.delenv(ALLOW_PRIVATE_ENV)
    with pytest.raises(CameraError, match="For safety"):
        iter_camera_frames(camera_http + "/snap.jpg")  # refused before any connection


def test_unknown_host(allow_private):
    with pytest.raises(CameraError) as caught:
        iter_camera_frames("http://no-such-camera.example/cam.mjpg")
    assert str(caught.value) == UNKNOWN_HOST


# --- RTSP (no RTSP server here: policy and failure paths only) ------------------------------------


def test_rtsp_private_address_refused_by_default():
    with pytest.raises(CameraError, match="For safety"):
        iter_camera_frames("rtsp://127.0.0.1:8554/live")


def test_rtsp_unreachable_camera(allow_private):
    started = time.monotonic()
    with pytest.raises(CameraError) as caught:
        next(iter_camera_frames(f"rtsp://user:pw@127.0.0.1:{free_port()}/live", connect_timeout=1, read_timeout=1))
    assert str(caught.value) == RTSP_FAILED
    assert time.monotonic() - started < 8  # the default timeouts would take 15 s


# --- HTTPS: the connection goes to the checked IP, certificates are checked against the name -------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"), "-days", "2",
         "-subj", "/CN=camera.test", "-addext", "subjectAltName=DNS:camera.test"],
        check=True, capture_output=True, timeout=30,
    )
    return folder / "cert.pem", folder / "key.pem"


@pytest.fixture
def camera_https(allow_private, certificate) -> Iterator[tuple[int, list]]:
    """The scripted camera over HTTPS; yields (port, the SNI names it was asked for)."""
    names = []
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(*certificate)
    tls.sni_callback = lambda sock, name, context: names.append(name)
    with scripted_camera(tls) as (port, _):
        yield port, names


def test_https_untrusted_certificate_is_refused(camera_https):
    port, _ = camera_https
    with pytest.raises(CameraError) as caught:
        next(iter_camera_frames(f"https://camera.test:{port}/snap.jpg"))
    assert str(caught.value) == TLS_FAILED


def test_https_checks_the_name_but_connects_to_the_checked_ip(camera_https, certificate, monkeypatch):
    port, names = camera_https
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    monkeypatch.setattr(camera, "_tls_context", lambda: trusting)
    frame = next(iter_camera_frames(f"https://camera.test:{port}/snap.jpg"))
    assert_rgb_frame(frame, (24, 32, 3))
    assert names == ["camera.test"]
    # The certificate names camera.test only, so the same server reached as 127.0.0.1 is refused.
    with pytest.raises(CameraError, match="secure"):
        next(iter_camera_frames(f"https://127.0.0.1:{port}/snap.jpg"))
