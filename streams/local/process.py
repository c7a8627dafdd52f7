"""Background services with PID files: start, wait for health, stop by PID, report.

A service is a command line plus a health check. ``start`` refuses ports that are already
taken (a clear error, never a hang), waits until the check passes, and on failure stops what it
started and raises with the tail of the service's log.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Service", "ServiceError", "free_port", "port_in_use", "tail"]


class ServiceError(RuntimeError):
    """A local service could not be started or stopped; the message says why and what to do."""


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on ``host:port``.

    >>> port_in_use("127.0.0.1", free_port())
    False
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


_GIVEN: set[int] = set()  # ports free_port handed out in this process
_PICK = random.Random()  # seeded from the OS: other processes pick other ports


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now and that this process has not handed out before.

    Several services are configured before any of them binds, so a port the OS picks (bind to
    port 0) could come back twice (a chaos run on 2026-12-01 gave Kafka's broker and controller
    listeners the same port, and the broker refused to format its storage). It could also be
    taken meanwhile by an outgoing connection, whose local port the OS picks from the same
    ephemeral range: ports are therefore drawn from below that range, and checked by binding.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = _PICK.randrange(10_000, low) if low > 11_000 else 0
        if port in _GIVEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            port = sock.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
    raise ServiceError(f"found no free port on {host} in 200 tries")


def _ephemeral_low() -> int:
    """The lowest port the OS gives outgoing connections (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, or a note that there is none."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def run_step(cmd: Sequence[str], *, what: str, quiet: bool = True, secrets: Sequence[str] = ()) -> None:
    """Run a provisioning command; on failure raise with what failed and its output's tail.

    ``quiet`` captures the output (shown only on failure) instead of streaming it; any of
    ``secrets`` in that output is masked.
    """
    result = subprocess.run(list(cmd), capture_output=quiet or bool(secrets), text=True, check=False)
    if result.returncode != 0:
        output = f"{(result.stdout or '')[-3000:]}{(result.stderr or '')[-2000:]}"
        for secret in secrets:
            output = output.replace(secret, "***")
        raise ServiceError(f"{what} failed (exit {result.returncode}):\n{output}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


@dataclass(kw_only=True)
class Service:
    name: str
    argv: Sequence[str]
    run_dir: Path
    health: Callable[[], bool]
    ports: Sequence[tuple[str, int]] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The PID of the running service, or None (a stale PID file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if _alive(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(self, *, timeout_s: float) -> int:
        """Start in the background and wait until healthy; returns the PID.

        Already running and healthy: returns its PID without starting a second one.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        running = self.pid()
        if running is not None:
            if _wait(self.health, timeout_s=min(timeout_s, 10.0), alive=lambda: _alive(running)):
                return running
            raise ServiceError(
                f"{self.name} (pid {running}) is running but not healthy; "
                f"stop it with `streamsense down`. Log {self.log_file}:\n{tail(self.log_file)}"
            )
        taken = [f"{h}:{p}" for h, p in self.ports if port_in_use(h, p)]
        if taken:
            raise ServiceError(
                f"cannot start {self.name}: port {', '.join(taken)} already in use by another "
                "process. Stop it, or choose other ports with STREAMSENSE_* settings."
            )
        with self.log_file.open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(self.argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env}, cwd=self.cwd, start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        if _wait(self.health, timeout_s=timeout_s, alive=lambda: proc.poll() is None):
            return proc.pid
        code = proc.poll()
        self.stop()
        why = f"exited with code {code}" if code is not None else f"not healthy after {timeout_s:.0f}s"
        raise ServiceError(
            f"{self.name} {why}. Last lines of {self.log_file}:\n{tail(self.log_file)}"
        )

    def stop(self, *, timeout_s: float = 30.0, sig: int = signal.SIGTERM) -> bool:
        """SIGTERM (or ``sig``) the service, SIGKILL after ``timeout_s``. True if it ran.

        Services we start lead their own process group, which is signalled whole (Triton's
        Python-backend stubs are its children); a process started elsewhere, such as
        ``streamsense worker &`` from a script, may share its parent's group and is signalled
        alone, so that nothing else in that group is hit.
        """
        pid = self.pid()
        if pid is None:
            return False
        leads_group = _leads_group(pid)
        _signal(pid, sig, group=leads_group)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            _signal(pid, signal.SIGKILL, group=leads_group)
            while _alive(pid):
                time.sleep(0.05)
        if leads_group:
            # Children that outlived the group's leader.
            _signal(pid, signal.SIGKILL, group=True)
        self.pid_file.unlink(missing_ok=True)
        return True


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _signal(pid: int, sig: int, *, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _wait(check: Callable[[], bool], *, timeout_s: float, alive: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            return False
        with contextlib.suppress(Exception):
            if check():
                return True
        time.sleep(0.25)
    return False
