"""Bad input on the command line: one clear line, a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import only


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "muscipula", *args], capture_output=True,
                          text=True, timeout=timeout)


def config(tmp_path: Path, body: dict) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(body))
    return str(path)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    return lines[0]


def test_port_in_use_names_service_and_address(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cfg = config(tmp_path, only({"blackhole": {"tcp_ports": [port], "udp_ports": []}}))
        res = run("run", "--config", cfg, "--state-dir", str(tmp_path / "s"),
                  "--listen", "127.0.0.1")
    assert res.returncode == 1
    line = one_line(res.stderr)
    assert f"blackhole: cannot bind tcp [127.0.0.1]:{port}: address already in use" in line


def test_udp_port_in_use(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        cfg = config(tmp_path, only({"blackhole": {"tcp_ports": [], "udp_ports": [port]}}))
        res = run("run", "--config", cfg, "--state-dir", str(tmp_path / "s"),
                  "--listen", "127.0.0.1")
    assert res.returncode == 1
    assert f"blackhole: cannot bind udp [127.0.0.1]:{port}" in one_line(res.stderr)


def test_offset_past_the_last_port(tmp_path):
    cfg = config(tmp_path, only({"blackhole": {"tcp_ports": [65000], "udp_ports": []}}))
    res = run("run", "--config", cfg, "--state-dir", str(tmp_path / "s"),
              "--listen", "127.0.0.1", "--port-offset", "1000")
    assert res.returncode == 1
    assert "[127.0.0.1]:66000: port out of range" in one_line(res.stderr)
    res = run("run", "--port-offset", "70000", "--state-dir", str(tmp_path / "s"))
    assert res.returncode == 2 and "--port-offset" in one_line(res.stderr)


def test_unusable_state_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    port = _free_port()
    cfg = config(tmp_path, only({"blackhole": {"tcp_ports": [port], "udp_ports": []}}))
    res = run("run", "--config", cfg, "--state-dir", str(blocker / "state"),
              "--listen", "127.0.0.1")
    assert res.returncode == 1
    assert "state directory" in one_line(res.stderr)


def test_address_not_on_this_host(tmp_path):
    cfg = config(tmp_path, only({"blackhole": {"tcp_ports": [_free_port()], "udp_ports": []}}))
    res = run("run", "--config", cfg, "--state-dir", str(tmp_path / "s"),
              "--listen", "192.0.2.123")  # TEST-NET-1: never configured locally
    assert res.returncode == 1
    assert "address not available" in one_line(res.stderr)


def test_low_port_as_non_root_says_how_to_fix(tmp_path):
    """As an unprivileged user, port 23 of the default config cannot be bound."""
    import muscipula.engine  # noqa: F401 - loaded before the child loses access to them
    from muscipula import cli, services

    for name in services.names():
        services.get(name)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: become nobody, run the CLI, report its stderr and status
        code = 99
        try:
            os.close(read_fd)
            os.dup2(write_fd, 2)
            sys.stderr = os.fdopen(2, "w")  # pytest's capture object is not fd 2
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            code = cli.main(["run", "--listen", "127.0.0.1", "--state-dir",
                             "/nonexistent/state"])
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        err = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1, err
    line = one_line(err)
    assert re.match(r"muscipula: \w+: cannot bind (tcp|tls|udp) \[127\.0\.0\.1\]:\d+: ports "
                    r"below 1024 need root", line), line
    assert "--port-offset" in line and "cap_net_bind_service" in line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
