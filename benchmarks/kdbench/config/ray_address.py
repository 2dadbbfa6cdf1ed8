"""A Ray cluster's address: its form checked where the option is read, and the cluster reached, within a
time limit, before a run writes anything.

``ray.init`` raises on an address it cannot parse, and on one where nothing answers it retries for
minutes (a closed port, a host that drops packets, a port that is not Ray's). So a run first connects
in a short-lived child process, under :data:`CONNECT_TIMEOUT_S`, and a cluster that is not there
is a one-line error instead of a hang.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from typing import Any

from kdbench.api.errors import ConfigError

#: Seconds to reach an existing cluster; a healthy one answers in a few.
CONNECT_TIMEOUT_S = 60.0
KEYWORDS = ("auto", "local")  # ray.init's: the cluster this machine runs; a new local one
_HOST_PORT = re.compile(r"(?:ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")
_PROBE = ("import sys, ray; ray.init(address=sys.argv[1], include_dashboard=False, logging_level='ERROR', "
          "log_to_driver=False); ray.shutdown()")


def parse_address(v: Any, where: str) -> str:
    """``auto``, ``local``, ``HOST:PORT`` or ``ray://HOST:PORT`` (the executor option's parser)."""
    match = _HOST_PORT.fullmatch(v) if isinstance(v, str) else None
    if not (v in KEYWORDS or (match and 1 <= int(match.group(2)) <= 65535)):
        raise ConfigError(f"{where} must be auto, local, HOST:PORT or ray://HOST:PORT, got {v!r}")
    return v


def check_reachable(address: str | None, timeout: float | None = None) -> None:
    """Connect to the cluster at ``address`` (None and ``local``: one this run starts, nothing to
    reach) within ``timeout`` seconds; a ConfigError saying why when that fails."""
    if address in (None, "local"):
        return
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    where = f"--ray-address {address}"
    if match := _HOST_PORT.fullmatch(address):  # a closed port or an unknown host: said at once
        try:
            socket.create_connection((match.group(1).strip("[]"), int(match.group(2))), timeout=timeout).close()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot connect ({exc.strerror or exc})") from None
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE, address], capture_output=True, text=True,
                               timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{where}: no Ray cluster answered within {timeout:g} s") from None
    if probe.returncode != 0:
        lines = [line for line in probe.stderr.splitlines() if line.strip()]
        raise ConfigError(f"{where}: Ray cannot connect ({lines[-1].strip()[:300] if lines else 'no reason given'})")
