"""Apps for the comparison tests: the same service in two versions, and answers of every shape.

``users_v1`` is the app (and the baseline, which runs the same code); ``users_v2`` is the
candidate, which gets ``total`` wrong for one user id in four. Both put a timestamp, a random
request id and a random ``X-Request-Id`` header in every answer: noise, not regressions.
"""

import json
import time
import uuid


def users(version: int):
    def app(environ, start_response):
        environ["wsgi.input"].read()
        user = int(environ["PATH_INFO"].rstrip("/").rsplit("/", 1)[-1] or 0)
        total = user * 10 + (1 if version == 2 and user % 4 == 0 else 0)
        body = json.dumps(
            {
                "id": user,
                "name": f"user {user}",
                "total": total,
                "generated_at": time.time(),
                "request_id": uuid.uuid4().hex,
                "items": [{"sku": f"s{user}-{i}", "price": i * 3} for i in range(3)],
            }
        ).encode()
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("X-Request-Id", uuid.uuid4().hex),
            ],
        )
        return [body]

    return app


users_v1 = users(1)
users_v2 = users(2)


def answering(status: str = "200 OK", headers=(), body: bytes = b"", chunks=None):
    """An app giving one fixed answer (in ``chunks`` when given), after reading the request body."""

    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response(status, list(headers))
        return list(chunks) if chunks is not None else [body]

    return app
