import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.local.process import Service, ServiceError, free_port, port_in_use


def _http_service(tmp_path, port: int, *, extra: str = "") -> Service:
    code = ("import http.server, sys\n" + extra +
            f"http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler)"
            ".serve_forever()\n")
    return Service(name="web", argv=[sys.executable, "-c", code], run_dir=tmp_path,
                   ports=[("127.0.0.1", port)], health=lambda: port_in_use("127.0.0.1", port))


def test_start_is_idempotent_and_stop_kills_by_pid(tmp_path):
    port = free_port()
    service = _http_service(tmp_path, port)
    pid = service.start(timeout_s=20)
    try:
        assert service.pid_file.read_text().strip() == str(pid)
        assert service.start(timeout_s=20) == pid  # already running: no second process
    finally:
        assert service.stop() is True
    assert service.pid() is None and not port_in_use("127.0.0.1", port)
    assert service.stop() is False


def test_a_taken_port_is_a_clear_error_not_a_hang(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ServiceError, match=rf"port 127.0.0.1:{port} already in use"):
            _http_service(tmp_path, port).start(timeout_s=30)
        assert time.monotonic() - started < 5


def test_a_crashing_service_reports_its_log_tail(tmp_path):
    service = _http_service(tmp_path, free_port(),
                            extra="print('config is broken: missing key', flush=True); sys.exit(3)\n")
    with pytest.raises(ServiceError, match=r"exited with code 3(.|\n)*config is broken: missing key"):
        service.start(timeout_s=20)
    assert service.pid() is None


def test_an_unhealthy_service_times_out_and_is_stopped(tmp_path):
    service = Service(name="sleeper", argv=[sys.executable, "-c", "import time; time.sleep(60)"],
                      run_dir=tmp_path, health=lambda: False)
    with pytest.raises(ServiceError, match="not healthy after 1s"):
        service.start(timeout_s=1)
    assert service.pid() is None


def test_stale_pid_file_is_ignored(tmp_path):
    service = _http_service(tmp_path, free_port())
    service.pid_file.write_text("999999\n")
    assert service.pid() is None and not service.pid_file.exists()


def test_stop_a_process_that_leads_no_process_group(tmp_path):
    # e.g. `streamsense worker &` from a script: the worker shares the script's process group.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        service = Service(name="worker-0", argv=[], run_dir=tmp_path, health=lambda: True)
        service.pid_file.write_text(f"{proc.pid}\n")
        started = time.monotonic()
        assert service.stop(timeout_s=5) is True
        # Gone before the SIGKILL deadline: SIGTERM reached it (stop() reaps our own child,
        # so its exit status is not observable here).
        assert time.monotonic() - started < 5
        assert not Path(f"/proc/{proc.pid}").exists() and not service.pid_file.exists()
    finally:
        proc.kill()


def test_free_ports_are_never_handed_out_twice_and_lie_below_the_outgoing_range():
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert low <= 11_000 or all(p < low for p in ports)
    for port in ports[:20]:  # each is free: it can be bound
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
