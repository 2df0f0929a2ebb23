"""wrk as the load generator: run it, feed it tokens, read its report.

wrk (Debian's package) is a C load generator; on our 2 cores it saturates Envoy without being the bottleneck the
way a Python client would. For a stream of distinct tokens a small Lua script hands each request the next token
from a file, each wrk thread taking every n-th one so no two requests share a token until the file runs out.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_TOKENS_SCRIPT = """
local tokens = {}
for line in io.lines("%(path)s") do tokens[#tokens + 1] = line end
local counter = 0
local threads = {}
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  index = id + 1
  step = %(threads)d
end
function request()
  local token = tokens[index]
  index = index + step
  if index > #tokens then index = id + 1 end
  return wrk.format("GET", "/", {["Authorization"] = "Bearer " .. token})
end
"""

_HEADER_SCRIPT = """
wrk.headers["Authorization"] = "Bearer %(token)s"
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


def available() -> bool:
    return shutil.which("wrk") is not None


def run(
    url: str,
    *,
    seconds: float,
    connections: int,
    threads: int,
    script_dir: Path,
    token: str | None = None,
    tokens_file: Path | None = None,
) -> WrkResult:
    """Load url for seconds; with token every request carries it, with tokens_file each request the next one."""
    script = script_dir / "wrk.lua"
    if tokens_file is not None:
        script.write_text(_TOKENS_SCRIPT % {"path": tokens_file, "threads": threads})
    elif token is not None:
        script.write_text(_HEADER_SCRIPT % {"token": token})
    else:
        script.write_text("")
    completed = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    return parse(completed.stdout)


def parse(report: str) -> WrkResult:
    """The figures from wrk's --latency report."""
    requests = int(_required(r"(\d+) requests in", report).group(1))
    rps = float(_required(r"Requests/sec:\s+([\d.]+)", report).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", report)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report)
    return WrkResult(
        requests=requests,
        rps=rps,
        p50_ms=_latency(report, "50%"),
        p99_ms=_latency(report, "99%"),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(value) for value in errors.groups()) if errors else 0,
    )


def _latency(report: str, percentile: str) -> float:
    match = _required(rf"^\s+{re.escape(percentile)}\s+([\d.]+)(us|ms|s)\s*$", report, re.MULTILINE)
    value, unit = float(match.group(1)), match.group(2)
    return round(value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 3)


def _required(pattern: str, report: str, flags: int = 0) -> re.Match[str]:
    # wrk prints these lines in every report it finishes; without one the report is not wrk's --latency output.
    match = re.search(pattern, report, flags)
    if match is None:
        raise ValueError(f"no {pattern!r} in wrk's report:\n{report}")
    return match
