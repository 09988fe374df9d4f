"""The prediction log joins each served record with its latest label, once."""

from __future__ import annotations

from ctloop.stores.predlog import LoggedPrediction, PredictionLog


def _served(request_id: str, row: int, prediction: str, ts: float) -> LoggedPrediction:
    return LoggedPrediction(request_id, row, ts, 1, "churned", "served", {"x": ts}, prediction, 0.5)


def test_a_reused_request_id_and_a_corrected_label_count_once(tmp_path):
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.db'}").start()
    try:
        # the client sent request r1 five times (a retry loop), and r2 once
        log.append([_served("r1", 0, "yes", float(i)) for i in range(5)])
        log.append([_served("r2", 0, "no", 9.0)])
        log.flush()
        log.add_feedback([("r1", 0, "no"), ("r2", 0, "no")])
        log.add_feedback([("r1", 0, "yes")])  # a correction: the latest label wins
        joined = log.joined()
    finally:
        log.close()
    assert sorted(joined["request_id"]) == ["r1", "r2"]
    r1 = joined[joined["request_id"] == "r1"].iloc[0]
    assert r1["label"] == "yes" and r1["ts"] == 4.0


def test_a_request_id_is_claimed_once_in_memory_and_in_the_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url)
    try:
        assert log.claim("a")
        assert not log.claim("a")  # being served: not yet written
        log.release("b")  # releasing an unknown id is harmless
        assert log.claim("b")
        log.release("b")  # its request failed: the id may be sent again
        assert log.claim("b")
        log.append([_served("a", 0, "yes", 1.0)])
        log.flush()
        assert not log.claim("a")  # now in the store
    finally:
        log.close()
    restarted = PredictionLog(url)
    try:
        assert not restarted.claim("a") and restarted.claim("c")
        stored, updates = restarted.record_feedback([("a", 0, "no"), ("a", 0, "yes")])
        assert (stored, updates) == (2, 1)
        assert restarted.record_feedback([("a", 0, "no")]) == (1, 1)
        assert restarted.joined()["label"].tolist() == ["no"]
    finally:
        restarted.close()
