"""Registry faults: an outage is an error (never "no champion"), registration is whole, and a
version's files are checked against the digest recorded when it was registered."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path

import pytest

from ctloop.errors import ArtifactTampered, StoreUnavailable
from ctloop.registry.store import Registry, load_model_dir, next_semver


@pytest.fixture(scope="module")
def iris():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    return X, y, LogisticRegression(max_iter=300).fit(X, y)


def _log(registry: Registry, model, X, semver: str = "1.0.0"):
    run_id, model_uri = registry.log_candidate(
        pipeline=model,
        input_example=X.head(2),
        params={},
        metrics={},
        tags={"ctloop.trigger": "manual"},
    )
    return run_id, model_uri


class _Answer(http.server.BaseHTTPRequestHandler):
    """A tracking server that answers every call with one status and MLflow's error body."""

    status = 503
    body = {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "down for maintenance"}
    calls = 0

    def _answer(self):
        type(self).calls += 1
        payload = json.dumps(self.body).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args):
        pass


def _serve(handler) -> tuple[str, http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def test_a_failing_tracking_server_is_an_outage_not_an_empty_registry(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    handler = type("Down", (_Answer,), {"calls": 0})
    url, server = _serve(handler)
    try:
        registry = Registry(url, "loans")
        for read in (lambda: registry.by_alias("champion"), registry.versions, registry.latest):
            with pytest.raises(StoreUnavailable, match=r"model registry http://127\.0\.0\.1.*"):
                read()
        assert handler.calls >= 3  # each read was retried before it gave up
    finally:
        server.shutdown()


def test_not_found_from_the_server_is_absence(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    handler = type(
        "Missing",
        (_Answer,),
        {"status": 404, "body": {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no"}},
    )
    url, server = _serve(handler)
    try:
        registry = Registry(url, "loans")
        assert registry.by_alias("champion") is None
        assert registry.version(3) is None
    finally:
        server.shutdown()


def test_a_closed_port_names_the_store(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    registry = Registry(f"http://user:secret@127.0.0.1:{port}", "loans")
    with pytest.raises(StoreUnavailable) as raised:
        registry.by_alias("champion")
    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message and "secret" not in message
    assert "\n" not in message


def test_a_half_made_version_is_never_seen_and_is_swept_by_the_next_registration(tmp_path, iris):
    X, y, model = iris
    registry = Registry(f"sqlite:///{tmp_path / 'm.db'}", "iris", (tmp_path / "art").as_uri())
    run_id, model_uri = _log(registry, model, X)
    first = registry.register(model_uri, run_id, {"semver": "1.0.0"})
    # what a process killed between creating a version and tagging it left behind (before
    # registration was one call): a version of a ctloop run, without its semver
    run_id, model_uri = _log(registry, model, X)
    half = registry.client.create_model_version("iris", model_uri, run_id)
    registry.set_alias("champion", int(half.version))
    assert [v.version for v in registry.versions()] == [first.version]
    assert registry.by_alias("champion") is None
    assert registry.version(int(half.version)) is None
    # another tool's version under the same name (not a ctloop run) is left alone
    foreign = registry.client.create_model_version("iris", "file:///elsewhere/model")
    assert next_semver(registry.latest(), first.signature) == "1.1.0"
    run_id, model_uri = _log(registry, model, X)
    second = registry.register(model_uri, run_id, {"semver": "1.1.0"})
    left = {int(mv.version) for mv in registry.client.search_model_versions("name='iris'")}
    assert left == {first.version, int(foreign.version), second.version}
    assert [v.version for v in registry.versions()] == [first.version, second.version]
    assert second.complete and second.tags["ctloop.artifact_digest"]


def _model_folder(tmp_path: Path) -> Path:
    [mlmodel] = [p for p in (tmp_path / "art").rglob("MLmodel") if "models" in p.parts]
    return mlmodel.parent


def test_a_swapped_model_file_is_refused(tmp_path, iris):
    from sklearn.tree import DecisionTreeClassifier

    X, y, model = iris
    registry = Registry(f"sqlite:///{tmp_path / 'm.db'}", "iris", (tmp_path / "art").as_uri())
    run_id, model_uri = _log(registry, model, X)
    ref = registry.register(model_uri, run_id, {"semver": "1.0.0"})
    assert (registry.load(ref).predict(X) == model.predict(X)).all()
    # an attacker builds another model from trusted types and puts it in place of the first
    other_registry = Registry(f"sqlite:///{tmp_path / 'o.db'}", "x", (tmp_path / "o").as_uri())
    _log(other_registry, DecisionTreeClassifier(max_depth=1).fit(X, 1 - (y > 0)), X)
    [forged] = list((tmp_path / "o").rglob("model.skops"))
    folders = {p.parent for p in (tmp_path / "art").rglob("model.skops")}
    for folder in folders:
        (folder / "model.skops").write_bytes(forged.read_bytes())
    with pytest.raises(ArtifactTampered, match=r"version 1: .*do not match the digest"):
        registry.load(ref)


def test_a_model_file_named_outside_its_folder_is_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "MLmodel").write_text(
        "flavors:\n  sklearn:\n    pickled_model: ../../../../etc/passwd\n"
        "    serialization_format: skops\n"
    )
    with pytest.raises(ArtifactTampered, match="outside its folder"):
        load_model_dir(folder)
