"""The prediction log joins each served record with its latest label, once."""

from __future__ import annotations

import multiprocessing
import os

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


def _replica(url: str, ids: list[str], start, results) -> None:
    """One server replica: open the shared log when told, then claim every id at once."""
    start.wait()
    log = PredictionLog(url)
    try:
        start.wait()
        results.put((os.getpid(), [log.claim(i) for i in ids]))
    finally:
        log.close()


def test_two_processes_racing_on_the_same_ids_claim_each_once(tmp_path):
    """Replicas sharing one log: for each id exactly one claim wins, whoever is first. They
    also open a new log at the same moment (both create its tables)."""
    url = f"sqlite:///{tmp_path / 'shared' / 'log.db'}"
    ids = [f"race-{i}" for i in range(300)]
    spawn = multiprocessing.get_context("spawn")  # fresh processes, as replicas are
    start, results = spawn.Barrier(2), spawn.Queue()
    replicas = [spawn.Process(target=_replica, args=(url, ids, start, results)) for _ in "ab"]
    for replica in replicas:
        replica.start()
    answers = [results.get(timeout=120) for _ in replicas]
    for replica in replicas:
        replica.join(30)
        assert replica.exitcode == 0
    (_, a), (_, b) = answers
    assert [x + y for x, y in zip(a, b, strict=True)] == [1] * len(ids)  # one winner per id
    later = PredictionLog(url)
    try:
        assert not any(later.claim(i) for i in ids)  # and none is free afterwards
    finally:
        later.close()
