"""Concurrent HTTP clients for the benchmarks, each asking again as soon as answered: wrk (Debian's
package, installed by the bootstrap), a load generator in C that costs the shared CPUs a fraction
of what as many Python clients cost, so that the server under test gets them.

Each of `connections` keep-alive connections asks for a random path of `paths`, with `headers`
and one of `cookies` (in turn); wrk measures each call from its request to its answer, and
counts answers that are not 2xx or 3xx and connection errors apart.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# What wrk prints when it stops (its `done` hook, below): microseconds and counts.
_SCRIPT = """
local paths = %(paths)s
local cookies = %(cookies)s
local sent = 0
for name, value in pairs(%(headers)s) do wrk.headers[name] = value end

request = function()
  sent = sent + 1
  local headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  if #cookies > 0 then headers["Cookie"] = cookies[(sent %% #cookies) + 1] end
  return wrk.format("GET", paths[math.random(#paths)], headers)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nFLEET-LOAD {"calls": %%d, "p50": %%d, "p99": %%d, "max": %%d, "seconds": %%f, ' ..
    '"connectionErrors": %%d, "badAnswers": %%d, "timeouts": %%d}\\n',
    summary.requests, latency:percentile(50), latency:percentile(99), latency.max,
    summary.duration / 1e6, e.connect + e.read + e.write, e.status, e.timeout))
end
"""


@dataclasses.dataclass(frozen=True)
class Load:
    """What the clients saw: calls, latencies in seconds, and failures."""

    calls: int
    p50: float
    p99: float
    max: float
    seconds: float
    connection_errors: int
    bad_answers: int
    timeouts: int

    @property
    def failures(self) -> int:
        return self.connection_errors + self.bad_answers + self.timeouts

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0


def _lua(values: Sequence[str] | dict[str, str]) -> str:
    """A Lua table of strings (JSON's string escapes are Lua's for these values)."""
    if isinstance(values, dict):
        return "{" + ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in values.items()) + "}"
    return "{" + ", ".join(json.dumps(v) for v in values) + "}"


def hammer(
    base_url: str,
    paths: Sequence[str],
    connections: int,
    *,
    headers: dict[str, str] | None = None,
    cookies: Sequence[str] = (),
    seconds: float | None = None,
    until: Callable[[], bool] | None = None,
    check: Callable[[], None] | None = None,
) -> Load:
    """`connections` clients asking back to back for `seconds`, or until `until()` (asked every
    half second; `check()` too, to stop early with its exception)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed: run `make bootstrap`")
    with tempfile.TemporaryDirectory(prefix="fleet-load-") as tmp:
        script = Path(tmp) / "load.lua"
        script.write_text(
            _SCRIPT % {"paths": _lua(paths), "cookies": _lua(cookies), "headers": _lua(headers or {})}
        )
        duration = f"{max(1, round(seconds))}s" if seconds else "3600s"
        command = [wrk, "-t", "1", "-c", str(connections), "-d", duration, "--timeout", "60s"]
        process = subprocess.Popen(
            [*command, "-s", str(script), base_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            if until is not None:
                while process.poll() is None and not until():
                    if check is not None:
                        check()
                    time.sleep(0.5)
                process.send_signal(signal.SIGINT)  # wrk stops and prints what it measured
            output, _ = process.communicate(timeout=(seconds or 0) + 120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    found = [line for line in output.splitlines() if line.startswith("FLEET-LOAD ")]
    if not found:
        raise RuntimeError(f"wrk printed no figures:\n{output[-2000:]}")
    figures = json.loads(found[-1].removeprefix("FLEET-LOAD "))
    return Load(
        calls=figures["calls"],
        p50=figures["p50"] / 1e6,
        p99=figures["p99"] / 1e6,
        max=figures["max"] / 1e6,
        seconds=figures["seconds"],
        connection_errors=figures["connectionErrors"],
        bad_answers=figures["badAnswers"],
        timeouts=figures["timeouts"],
    )
