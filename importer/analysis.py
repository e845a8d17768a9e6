"""The metrics gate (analysis): a Prometheus query the new version must keep at or below a limit
while it is watched. One implementation for every kind: a container's probation
(importer.health) and each stage of a service release (importer.kinds.service.release).

`[target.health] prometheus = { url, query, max, window, failure_limit }`: the query and its limit
are the app's knowledge (signed); the URL is this host's business (allowed by host-policy.toml
`prometheus_urls`, set or overridden by the site file). After the health gate passed (a container)
or a stage's services were rolled (a service release), the new version is watched for at least
`window` seconds and the query is evaluated as an instant query (`GET URL/api/v1/query?query=...`)
about once a second, and once more when the window ends.

The rules (`judge`), one place:

- every series of an instant vector (or a scalar) must be a finite number at or below `max`;
  the highest one is what counts, and what the failure line names;
- the query failing to evaluate (an HTTP error or redirect, no whole answer within QUERY_TIMEOUT
  (a server that drips its answer too), an unreachable server, an answer over MAX_ANSWER or nested
  too deeply, an answer that is not the API's JSON, `"status": "error"`, a matrix or string result, a value that
  is not a number, NaN, +-Inf) fails the gate at once: an unevaluated gate proves nothing, so the
  update is rolled back rather than committed blind;
- an EMPTY result (no series) is "no data yet" while the window runs: a rate over a series the
  new version has just started to export is empty until Prometheus has scraped it a few times.
  At the end of the window the result must not be empty: a query that never returned data
  (a typo in a metric name, a target Prometheus does not scrape) would otherwise pass every
  update. A release whose error series legitimately does not exist until the first error says
  so in its (signed) query: `sum(rate(app_errors_total[1m])) or vector(0)`.

`failure_limit` (default 0) failed evaluations are tolerated during the window (a scrape that
was late, one noisy reading); one more fails it (`Analysis`). The evaluation at the window's end
must pass whatever the limit: the verdict is never given on a failing reading.

The query may name the release through placeholders (`{{version}}`, `{{services}}`, ...,
bundlecore.placeholders), filled in by `MetricsGate.bound` with escaped values.

A failure rolls back exactly like a failed health check (exit 4). After a crash, `bundle recover`
resumes the journaled window (the same end time) and evaluates the query again, at least once at
its end, before it commits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping
from urllib.parse import urlsplit

from bundlecore import placeholders
from bundlecore.remote import Failure, RemoteProblem, fetch, parse_json

# One evaluation's whole answer may take this long before it counts as failed (a slow Prometheus is
# not an answer; bundlecore.remote enforces it over connect, headers and body).
QUERY_TIMEOUT = 5.0
# Cap on the answer read (a query over many series must not fill memory).
MAX_ANSWER = 1024 * 1024


class MetricsUnavailable(Exception):
    """The query could not be evaluated (carries what went wrong, one line)."""


@dataclass(frozen=True)
class Reading:
    """One evaluation: the highest value of the result's series, or None for an empty result."""

    value: float | None


def parse_answer(status_code: int, body: bytes) -> Reading:
    """The Prometheus HTTP API's answer to an instant query -> Reading; MetricsUnavailable if it is
    not a successful vector or scalar of numbers (or is nested too deeply to read)."""
    try:
        doc = parse_json(body, "the answer", dict)
    except RemoteProblem as e:
        if e.failure is Failure.TOO_DEEP:
            raise MetricsUnavailable(f"HTTP {status_code}, {e}") from None
        doc = None
    if not isinstance(doc, dict):
        raise MetricsUnavailable(f"HTTP {status_code}, not a Prometheus API answer")
    if doc.get("status") != "success":
        why = doc.get("error") or doc.get("errorType") or "no reason given"
        raise MetricsUnavailable(f"Prometheus says error: {str(why)[:200]}")
    if status_code != 200:
        raise MetricsUnavailable(f"HTTP {status_code}")
    data = doc.get("data")
    kind = data.get("resultType") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    if kind == "scalar":
        return Reading(_number(result))
    if kind != "vector" or not isinstance(result, list):
        raise MetricsUnavailable(f"the result is a {kind or 'malformed answer'}, not an instant vector or scalar")
    if not result:
        return Reading(None)
    return Reading(max(_number(s.get("value") if isinstance(s, dict) else None) for s in result))


def _number(sample) -> float:
    """[timestamp, "value"] -> a finite float."""
    if not (isinstance(sample, list) and len(sample) == 2 and isinstance(sample[1], str)):
        raise MetricsUnavailable(f"a sample is not [time, \"value\"]: {str(sample)[:80]}")
    try:
        v = float(sample[1])
    except ValueError:
        raise MetricsUnavailable(f"the value {sample[1][:40]!r} is not a number") from None
    if not math.isfinite(v):
        raise MetricsUnavailable(f"the value is {sample[1][:40]}, not a finite number")
    return v


def judge(reading: Reading, limit: float, final: bool) -> str | None:
    """The limit rule: None when the reading is acceptable, else why not (see the module docstring)."""
    if reading.value is None:
        return "it returned no data by the end of the window" if final else None
    if not reading.value <= limit:  # also refuses a NaN limit: no value is "at or below" it
        return f"its value {reading.value:g} is above the limit {limit:g}"
    return None


@dataclass(frozen=True)
class MetricsGate:
    """A signed query and limit, evaluated against this host's Prometheus."""

    url: str
    query: str
    limit: float
    window: float
    failure_limit: int = 0

    @classmethod
    def from_health(cls, health: dict | None) -> "MetricsGate | None":
        prom = (health or {}).get("prometheus")
        if not prom:
            return None
        return cls(str(prom.get("url") or ""), str(prom["query"]), float(prom["max"]), float(prom["window"]),
                   int(prom.get("failure_limit") or 0))

    def bound(self, values: Mapping[str, str]) -> "MetricsGate":
        """The gate with its query's placeholders filled in (bundlecore.placeholders: escaped values,
        only inside the query's strings)."""
        return replace(self, query=placeholders.substitute(self.query, values))

    def describe(self) -> str:
        return (f"Prometheus {self.url}: {self.query} at most {self.limit:g} for {self.window:g} s"
                + (f", {self.failure_limit} failed evaluation(s) tolerated" if self.failure_limit else ""))

    def evaluate(self) -> Reading:
        """One instant query, its whole answer within QUERY_TIMEOUT (a total deadline: a Prometheus
        that drips its answer fails like one that never answers); MetricsUnavailable when it
        cannot be evaluated."""
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise MetricsUnavailable(f"no usable Prometheus URL ({self.url or 'none set'})")
        try:
            reply = fetch("GET", self.url.rstrip("/") + "/api/v1/query", params={"query": self.query},
                          timeout=QUERY_TIMEOUT, max_bytes=MAX_ANSWER, allow_redirects=False)
        except RemoteProblem as e:
            raise MetricsUnavailable(str(e)) from None
        return parse_answer(reply.status_code, reply.body)

    def check(self, final: bool) -> str | None:
        """Evaluate and judge: None when fine so far, else the one line that fails the update."""
        try:
            why = judge(self.evaluate(), self.limit, final)
        except MetricsUnavailable as e:
            why = f"it could not be evaluated: {e}"
        return f"metrics gate {self.query!r} at {self.url}: {why}" if why else None


class Analysis:
    """One watch of a gate over its window: the failed evaluations counted against `failure_limit`."""

    def __init__(self, gate: MetricsGate):
        self.gate, self.failures = gate, 0

    def step(self, final: bool) -> str | None:
        """One evaluation; the line that fails the update once failures exceed the limit (or the
        final evaluation fails), else None."""
        why = self.gate.check(final)
        if why is None:
            return None
        self.failures += 1
        if final or self.failures > self.gate.failure_limit:
            limit = self.gate.failure_limit
            return why + (f" ({self.failures} failed evaluation(s), {limit} tolerated)" if limit else "")
        return None
