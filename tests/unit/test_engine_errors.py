"""The engine layer's error rules without an engine: which answers are transient, and the bounded retry.

The SDK's own exception objects are built directly (as the SDK raises them) and translated."""

import docker.errors
import pytest
import requests

from bundlecore.engine.errors import (RETRY_DELAYS, EngineConflict, EngineError, EngineNotFound, retrying,
                                      transient_reason)
from bundlecore.engine.sdk import translate

CID = "3f5c0d9e" * 8


def api_error(status: int, message: str) -> docker.errors.APIError:
    resp = requests.Response()
    resp.status_code = status
    cls = docker.errors.NotFound if status == 404 else docker.errors.APIError
    return cls(f"{status} Server Error", response=resp, explanation=message)


@pytest.mark.parametrize("raised, kind, status, transient", [
    (api_error(500, f"unable to remove filesystem for {CID}: unlinkat /var/lib/docker/containers/{CID}/mounts: "
                    "directory not empty"), EngineError, 500, "filesystem still busy"),
    (api_error(500, f"driver \"overlay2\" failed to remove root filesystem for {CID}: unlinkat "
                    "/var/lib/docker/overlay2/x/merged: device or resource busy"), EngineError, 500,
     "device or resource busy"),
    (api_error(409, f"removal of container {CID} is already in progress"), EngineConflict, 409,
     "removal already in progress"),
    (requests.ConnectionError("('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))"),
     EngineError, None, "connection reset"),
    (requests.ConnectionError("('Connection aborted.', RemoteDisconnected('Remote end closed connection "
                              "without response'))"), EngineError, None, "connection reset"),
    (requests.ConnectionError("UnixHTTPConnectionPool(host='localhost', port=None): Pool is closed."), EngineError,
     None, "connection pool recycled"),
    # Podman: a force removal racing the container's own exit
    (api_error(500, f"cannot remove container {CID} as it could not be stopped: sending SIGKILL to container "
                    f"{CID}: container state improper: stopped"), EngineError, 500, "container still changing state"),
    (api_error(409, f"Could not kill running container {CID}, cannot remove - Container {CID} is not running"),
     EngineConflict, 409, "container still changing state"),
    # permanent: said once, never retried
    (api_error(404, f"No such container: {CID}"), EngineNotFound, 404, None),
    (api_error(409, 'Conflict. The container name "/web" is already in use'), EngineConflict, 409, None),
    (api_error(500, "driver failed programming external connectivity: port is already allocated"), EngineError,
     500, None),
    (api_error(400, "invalid reference format"), EngineError, 400, None),
    (requests.ConnectionError("('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))"),
     EngineError, None, None),
    (requests.ReadTimeout("UnixHTTPConnectionPool(host='localhost', port=None): Read timed out."), EngineError,
     None, None),
])
def test_translation_and_classification(raised, kind, status, transient):
    e = translate(raised)
    assert type(e) is kind and e.status == status and e.transient == transient
    assert e.explanation == e.message == str(e) and e.message  # the engine's own words, one line


def test_transient_needs_the_status_too():
    assert transient_reason(400, "directory not empty") is None
    assert transient_reason(500, "Directory Not Empty") == "filesystem still busy"


class Script:
    """A call that fails with the given errors in turn, then returns "done"; sleeps and lines recorded."""

    def __init__(self, *errors):
        self.errors, self.calls, self.slept, self.said = list(errors), 0, [], []

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"

    def run(self, **kw):
        return retrying("removal of container 3f5c0d9e3f5c", self, say=self.said.append, sleep=self.slept.append,
                        **kw)


BUSY = EngineError(500, f"unable to remove filesystem for {CID}: directory not empty")


def test_transient_then_success_is_retried_and_said():
    s = Script(BUSY, BUSY)
    assert s.run() == "done"
    assert s.calls == 3 and s.slept == [0.2, 0.5]
    assert s.said == ["engine busy: filesystem still busy; retrying removal of container 3f5c0d9e3f5c in 0.2 s",
                      "engine busy: filesystem still busy; retrying removal of container 3f5c0d9e3f5c in 0.5 s"]


def test_persistent_transient_failure_is_bounded_and_raises_the_engine_error():
    s = Script(*[BUSY] * 20)
    with pytest.raises(EngineError) as e:
        s.run()
    assert e.value is BUSY
    assert s.calls == len(RETRY_DELAYS) + 1 == 6
    assert s.slept == list(RETRY_DELAYS) and 7 <= sum(s.slept) <= 8
    assert s.said[-1].endswith("in 4 s") and len(s.said) == 5


def test_permanent_failure_is_not_retried():
    s = Script(EngineConflict(409, "the container name is already in use"))
    with pytest.raises(EngineConflict):
        s.run()
    assert s.calls == 1 and s.slept == [] and s.said == []


def test_gone_after_a_retry_means_the_removal_happened():
    gone = EngineNotFound(404, f"No such container: {CID}")
    assert Script(EngineConflict(409, f"removal of container {CID} is already in progress"), gone).run(
        gone_is_done=True) is None
    with pytest.raises(EngineNotFound):  # gone at the first try: the caller's to judge
        Script(gone).run(gone_is_done=True)
    with pytest.raises(EngineNotFound):  # not a removal: gone stays an error
        Script(BUSY, gone).run()
