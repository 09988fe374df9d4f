"""An oversized body, sent by ordinary clients to a real uvicorn server: they see the 413."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import httpx
import pytest
import requests
import uvicorn

from ctloop.config.settings import Config
from ctloop.serving.app import DRAIN_FACTOR, create_app
from ctloop.serving.server import ModelServer

LIMIT = 2_000_000  # the default serving.max_body_bytes
BODY = b'{"records": "' + b"x" * (3 * LIMIT) + b'"}'  # within the bound it reads and discards


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve-413")
    config = Config.model_validate({"dataset": {"target": "y"}, "paths": {"home": str(home)}})
    config.serving.max_body_bytes = LIMIT
    app = create_app(ModelServer(config), manage=False)  # no model: the body check comes first
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _check(status: int, text: str) -> None:
    assert status == 413, text
    assert json.loads(text)["detail"] == (
        f"body of {len(BODY)} bytes is over the limit of {LIMIT} bytes"
    )


def test_urllib_sees_the_413(base_url):
    request = urllib.request.Request(
        f"{base_url}/predict", data=BODY, headers={"content-type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=30)
    _check(err.value.code, err.value.read().decode())


def test_requests_and_httpx_see_the_413(base_url):
    for route in ("/predict", "/invocations", "/feedback"):
        answer = requests.post(f"{base_url}{route}", data=BODY, timeout=30)
        assert answer.status_code == 413, (route, answer.text)
    answer = requests.post(f"{base_url}/predict", data=BODY, timeout=30)
    _check(answer.status_code, answer.text)
    with httpx.Client(timeout=30) as client:
        answer = client.post(f"{base_url}/predict", content=BODY)
        _check(answer.status_code, answer.text)
        # the connection stays usable after the body was read
        assert client.post(f"{base_url}/predict", content=b"{}").status_code == 422


def _raw(base_url: str, head: bytes, body_chunks, pause: float = 0.0) -> bytes:
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        for chunk in body_chunks:
            sock.sendall(chunk)
            time.sleep(pause)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer


def test_a_chunked_upload_over_the_limit_sees_the_413(base_url):
    piece = b"x" * 250_000
    chunks = [b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(12)] + [b"0\r\n\r\n"]
    head = (
        b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    answer = _raw(base_url, head, chunks, pause=0.005)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert f"over the limit of {LIMIT} bytes".encode() in answer


def test_expect_100_continue_gets_the_413_without_sending_the_body(base_url):
    length = 100 * LIMIT  # far past the bound: nothing is read, the client is told at once
    assert length > DRAIN_FACTOR * LIMIT
    head = (
        b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % length
    )
    answer = _raw(base_url, head, [])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"100 Continue" not in answer
