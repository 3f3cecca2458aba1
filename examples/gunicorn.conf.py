"""gunicorn with the gevent worker; each worker process sends its own mirrors.

    gunicorn -c examples/gunicorn.conf.py

gunicorn's gevent worker monkey-patches before it imports the app, so the mirrors run
in greenlets; wsgimirror creates its connection pools lazily in each worker.
"""

import os

wsgi_app = "examples.flask_app:create_mirrored_app()"
worker_class = "gevent"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_connections = 1000
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
reuse_port = True  # the kernel spreads connections over the workers
graceful_timeout = 10
accesslog = None
