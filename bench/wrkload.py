"""The load generator for when `wrk` is on the PATH (Debian's `wrk` package): C and LuaJIT,
so the API's reads are measured with a fraction of the CPU `bench.rawload`'s Python clients
take from the same 2 cores.

`run(target, clients=16, duration=10)` keeps `clients` keep-alive connections busy over two
threads for `duration` seconds and returns what `rawload.run` returns: the answers per second,
the count of each status (a Lua script counts them) and latency percentiles (wrk's own
histogram), and the connection errors.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.rawload import Target

# Counts every status in each thread, and prints one JSON line at the end. `%d` of a Lua
# number: wrk's counters are integers.
_SCRIPT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    for code, count in pairs(thread:get("statuses")) do
      merged[code] = (merged[code] or 0) + count
    end
  end
  local parts = {}
  for code, count in pairs(merged) do
    table.insert(parts, string.format('"%d": %d', code, count))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK-RESULT {"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d, '
      .. '"statuses": {%s}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), table.concat(parts, ", ")))
end
"""
_MARK = "WRK-RESULT "


def available() -> bool:
    """Whether `wrk` is on the PATH."""
    return shutil.which("wrk") is not None


@dataclass
class WrkOutcome:
    """What wrk's clients saw, in the terms of `rawload.Outcome`."""

    requests: int
    seconds: float
    errors: int
    statuses: Counter[int] = field(default_factory=Counter)
    p50_ms: float = 0.0
    p99_ms: float = 0.0

    @property
    def per_second(self) -> float:
        """Answers per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """The 50th or 99th percentile latency in milliseconds."""
        if p == 50:
            return self.p50_ms
        if p == 99:
            return self.p99_ms
        raise ValueError("wrk's outcome keeps the 50th and 99th percentiles only")


def parse(output: str) -> WrkOutcome:
    """The outcome in wrk's output (the script's line), or ValueError without one."""
    for line in output.splitlines():
        if line.startswith(_MARK):
            found = json.loads(line.removeprefix(_MARK))
            return WrkOutcome(
                requests=found["requests"],
                seconds=found["duration_us"] / 1e6,
                errors=found["errors"],
                statuses=Counter({int(code): n for code, n in found["statuses"].items()}),
                p50_ms=found["p50_us"] / 1000,
                p99_ms=found["p99_us"] / 1000,
            )
    raise ValueError(f"wrk printed no result: {output[-500:]!r}")


def run(target: Target, *, clients: int, duration: float, threads: int = 2) -> WrkOutcome:
    """`clients` keep-alive connections over `threads` threads for `duration` seconds."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as folder:
        script = Path(folder) / "count.lua"
        script.write_text(_SCRIPT)
        command = [
            "wrk",
            f"--threads={max(1, min(threads, clients))}",
            f"--connections={clients}",
            f"--duration={max(1, round(duration))}s",
            "--timeout=10s",
            f"--script={script}",
        ]
        for name, value in target.headers.items():
            command += ["--header", f"{name}: {value}"]
        command.append(f"http://{target.host}:{target.port}{target.path}")
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=duration + 60, check=True
        )
    return parse(done.stdout)
