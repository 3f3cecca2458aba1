"""gunicorn with the gevent worker; each worker process sends its own mirrors.

    gunicorn -c examples/gunicorn.conf.py
    WSGIMIRROR_METRICS_BIND=127.0.0.1:9100 gunicorn -c examples/gunicorn.conf.py   # with /metrics

gunicorn's gevent worker monkey-patches before it imports the app, so the mirrors run
in greenlets; wsgimirror creates its connection pools lazily in each worker. With
WSGIMIRROR_METRICS_BIND, the workers write Prometheus metrics to a shared directory
(prometheus_client's multi-process mode) and the master serves their sum.
"""

import os
import shutil
import tempfile

wsgi_app = "examples.flask_app:create_mirrored_app()"
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_connections = 1000
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Each worker binds the address itself and the kernel spreads connections over them. gunicorn's master then holds
# no socket, and its own "Listening at:" line shows no address: when_ready says where it listens.
reuse_port = True
graceful_timeout = 10
accesslog = None

METRICS_BIND = os.environ.get("WSGIMIRROR_METRICS_BIND")
if METRICS_BIND and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # Set before any worker imports prometheus_client; removed again in on_exit.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="wsgimirror-metrics-")


def when_ready(server):
    server.log.info("Listening at: http://%s (%d workers, each with SO_REUSEPORT)", bind, workers)
    if METRICS_BIND:
        from prometheus_client import start_http_server

        from wsgimirror.metrics import exposition_registry

        host, _, port = METRICS_BIND.rpartition(":")
        start_http_server(int(port), host, registry=exposition_registry())
        server.log.info("wsgimirror metrics on http://%s/metrics", METRICS_BIND)


def child_exit(server, worker):
    if METRICS_BIND:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    """Wait for the worker's mirrors in flight and write what its file destinations still queue."""
    middleware = getattr(worker.wsgi, "wsgi_app", worker.wsgi)  # Flask keeps the middleware there
    close = getattr(middleware, "close", None)
    if close is not None:
        close(timeout=5)


def on_exit(server):
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if METRICS_BIND and os.path.basename(directory).startswith("wsgimirror-metrics-"):
        shutil.rmtree(directory, ignore_errors=True)
