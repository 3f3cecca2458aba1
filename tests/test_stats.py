"""A request's copies are counted once each, whichever way its preparation goes (in-process)."""

from werkzeug.test import create_environ

from tests.helpers import assert_accounted
from wsgimirror.agent.dispatch import Dispatcher
from wsgimirror.middleware import MirrorMiddleware


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"real answer"]


def two_clusters(percent_a: float) -> dict:
    """Route ``r`` mirrors to clusters ``a`` (sampled at ``percent_a``) and ``b``; nothing listens there."""
    return {
        "ReverseProxy": {
            "Routes": {"r": {"Match": {"Paths": ["/{**catch-all}"]}, "Metadata": {"MirrorCluster": "a,b"}}},
            "Clusters": {
                cid: {
                    "Metadata": {"MirrorPercent": str(percent)},
                    "Destinations": {"d": {"Address": "http://127.0.0.1:9"}},
                }
                for cid, percent in (("a", percent_a), ("b", 100))
            },
        },
    }


def serve(mirrored: MirrorMiddleware) -> bytes:
    answer = mirrored(create_environ("/x"), lambda status, headers, exc_info=None: None)
    try:
        return b"".join(answer)
    finally:
        getattr(answer, "close", lambda: None)()


def test_a_failure_preparing_a_mirror_counts_each_copy_once_as_internal_error(monkeypatch):
    def broken(self, cluster_ids):
        raise RuntimeError("a bug in the dispatcher")

    monkeypatch.setattr(Dispatcher, "open_circuits", broken)
    mirrored = MirrorMiddleware(app, two_clusters(percent_a=0))  # a is sampled out before the failure
    assert serve(mirrored) == b"real answer"
    stats = mirrored.stats()
    assert stats["requests"] == 1 and stats["copies"] == 2
    assert stats["dropped"] == {"internal_error": 2}
    assert_accounted(stats)


def test_copies_shed_for_a_full_backlog_are_counted_with_the_request(monkeypatch):
    mirrored = MirrorMiddleware(app, two_clusters(percent_a=0))
    monkeypatch.setattr(Dispatcher, "full", lambda self, cluster_ids: list(cluster_ids))
    for _ in range(3):
        assert serve(mirrored) == b"real answer"
    stats = mirrored.stats()
    assert (stats["requests"], stats["matched"], stats["copies"]) == (3, 3, 6)
    assert stats["dropped"] == {"sampled_out": 3, "backlog_full": 3}
    assert stats["by_cluster"]["a"]["dropped"] == {"sampled_out": 3}
    assert stats["by_cluster"]["b"]["dropped"] == {"backlog_full": 3}
    assert_accounted(stats)
