"""Shared fixtures: real gevent servers on 127.0.0.1 and recording mirror sinks.

The test process is monkey-patched first, as a gevent server owner would do, so
the servers, the mirrors and the test's own client all run cooperatively.
"""

from gevent import monkey

monkey.patch_all()

import io  # noqa: E402
import os  # noqa: E402

# The suite drives the in-process path (Agent.Mode in-process) and inspects its parts; the agent, the default
# for users, has its own tests (tests/agent/), which start real agent processes. Child processes inherit this,
# unless a test asks for the default.
os.environ["WSGIMIRROR_AGENT"] = "in-process"
import tempfile  # noqa: E402

import gevent  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from tests.helpers import Sink, serve  # noqa: E402

# In CI the fuzz tests draw the same examples every run, so a submission lands or not on its own
# merits; on a developer's machine they draw new ones each run, to keep finding what nobody wrote.
settings.register_profile("ci", derandomize=True, database=None)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture
def sink():
    """A recording mirror destination answering 200 at once."""
    with Sink() as s:
        yield s


@pytest.fixture
def make_sink():
    """A factory of recording sinks (delay, status) stopped at the end of the test."""
    sinks = []

    def factory(**kwargs):
        s = Sink(**kwargs).start()
        sinks.append(s)
        return s

    yield factory
    for s in sinks:
        s.stop()


@pytest.fixture
def server():
    """A factory: ``server(app)`` serves a WSGI app with gevent.pywsgi and returns its (host, port)."""
    servers = []

    def factory(app):
        srv = serve(app)
        servers.append(srv)
        return srv.address

    yield factory
    for srv in servers:
        srv.stop(timeout=1)


@pytest.fixture
def hub_errors():
    """What the gevent hub printed (greenlet tracebacks) during the test."""
    hub = gevent.get_hub()
    previous = hub.exception_stream
    stream = io.StringIO()
    hub.exception_stream = stream
    yield stream
    hub.exception_stream = previous


@pytest.fixture
def private_tempdir(tmp_path, monkeypatch):
    """A temporary directory of the test's own for everything ``tempfile`` creates, so a check for
    leftovers sees only what the code under test made (not another program's files in /tmp)."""
    directory = tmp_path / "tempdir"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return str(directory)
