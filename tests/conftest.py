"""Test-wide setup.

The Hub endpoint is read by huggingface_hub and datasets at import time, so the fake Hub's
address is fixed here, before any test module imports them. Nothing of ours is patched: the
real client libraries talk HTTP to `fakehub.FakeHub` on loopback.
"""

from __future__ import annotations

import os
import socket
import tempfile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_HOME = tempfile.mkdtemp(prefix="synth-datasets-tests-")
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{_free_port()}"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HOME"] = os.path.join(_HOME, "hf")
os.environ["SYNTH_DATASETS_CACHE"] = os.path.join(_HOME, "synth-cache")
os.environ.pop("HF_TOKEN", None)
for _name in ("COLLINEAR_API_KEY", "COLLINEAR_BASE_URL", "COLLINEAR_MODEL_ID"):
    os.environ.pop(_name, None)

# CPython 3.11.7 can raise "SystemError: AST constructor recursion depth mismatch" when pytest
# first rewrites hypothesis' modules while reporting a failure; importing it up front avoids that.
import hypothesis  # noqa: E402
import pytest  # noqa: E402

# The same examples on every run of the same code (CI runs the suite three times: a property
# failing once in a hundred runs would sink one in thirty submissions, unexplained), and a failure
# prints the blob that replays it; hypothesis also draws constants from the modules imported, so
# a seed alone cannot.
hypothesis.settings.register_profile(
    "synth_datasets", derandomize=True, database=None, print_blob=True
)
hypothesis.settings.load_profile("synth_datasets")

# pytester runs a small test file in a subprocess (the fake Hub fixture's own strictness test).
pytest_plugins = ["pytester"]

from helpers import MODEL_ID, make_client  # noqa: E402, F401  (MODEL_ID: the tests import it from here)

from synth_datasets.testing import Faults, ReferenceServer  # noqa: E402


@pytest.fixture
def start_server():
    """Start reference servers (``start_server(token=..., faults=...)``), stopped at teardown."""
    servers: list[ReferenceServer] = []

    def start(token: str | None = None, faults: Faults | None = None) -> ReferenceServer:
        server = ReferenceServer(token=token, faults=faults).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def ref_server(start_server):
    """A fresh reference server per test (random token), so request counts are the test's own."""
    return start_server()


@pytest.fixture
def ref_client(ref_server):
    client = make_client(ref_server)
    yield client
    client.close()


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "synth-cache"


from fakehub import HUB_TOKEN  # noqa: E402, F401
from fakehub import fake_hub as fake_hub  # noqa: E402  (registers the fake Hub fixture)


@pytest.fixture(autouse=True)
def _keep_os_environ():
    """datasets' map(num_proc=...) replaces os.environ with a copy of itself; monkeypatch then
    restores variables in the old mapping and a test's variables would leak into later tests
    (and into the CLI subprocesses they start). Put the original mapping back afterwards."""
    original = os.environ
    yield
    if os.environ is not original:
        os.environ = original  # noqa: B003 (restoring the object itself is the point)
