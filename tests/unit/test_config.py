"""Config: the embedded default, merging, and refusals that name key path, value and expectation."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from muscipula import config as configmod
from muscipula.config import ConfigError


def refused(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        configmod.load(path)
    return str(info.value)


def test_default_is_valid_and_listens_on_ipv4_and_ipv6():
    cfg = configmod.load()
    assert cfg.listen.addresses == ["0.0.0.0", "::"]
    assert cfg.services["blackhole"].enabled
    assert cfg.persona.preset == "windows-2008r2"
    for section in ("listen", "services", "persona", "limits", "sinks", "store", "paths"):
        assert section in configmod.Config.model_fields


def test_file_merges_over_default(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("limits: {idle_timeout: 5}\nservices: {blackhole: {tcp_ports: [2323]}}\n")
    cfg = configmod.load(path)
    assert cfg.limits.idle_timeout == 5
    assert cfg.limits.max_connections == configmod.Limits().max_connections  # untouched
    assert cfg.services["blackhole"].tcp_ports == [2323]
    assert cfg.services["blackhole"].udp_ports == [123]  # from the default


def test_service_limit_overrides_apply_over_global(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("limits: {idle_timeout: 50, max_bytes_in: 1000}\n"
                    "services: {blackhole: {limits: {idle_timeout: 2, max_udp_peers: 3}}}\n")
    lim = configmod.load(path).service_limits("blackhole")
    assert (lim.idle_timeout, lim.max_bytes_in, lim.max_udp_peers) == (2, 1000, 3)


def test_unknown_key_names_path_value_and_known_keys(tmp_path):
    msg = refused(tmp_path, "limits:\n  max_conections: 5\n")
    assert "limits.max_conections: unknown key" in msg
    assert "5" in msg and "max_connections" in msg  # what was meant is listed
    msg = refused(tmp_path, "sinks: {jsonlog: {rotation: {kep: 1}}}\n")
    assert "sinks.jsonlog.rotation.kep: unknown key" in msg and "keep" in msg
    msg = refused(tmp_path, "services: {blackhole: {tcp_port: [1]}}\n")
    assert "services.blackhole.tcp_port: unknown key" in msg and "tcp_ports" in msg
    msg = refused(tmp_path, "colour: blue\n")
    assert "colour: unknown key" in msg and "'blue'" in msg


def test_wrong_types_are_refused(tmp_path):
    msg = refused(tmp_path, "limits: {idle_timeout: soon}\n")
    assert "limits.idle_timeout" in msg and "'soon'" in msg and "number" in msg
    msg = refused(tmp_path, "services: {blackhole: {enabled: maybe}}\n")
    assert "services.blackhole.enabled" in msg and "'maybe'" in msg and "boolean" in msg
    msg = refused(tmp_path, "limits: 5\n")
    assert "limits:" in msg and "dictionary" in msg
    msg = refused(tmp_path, "services: [a]\n")
    assert "services" in msg and "mapping" in msg


def test_impossible_values_are_refused(tmp_path):
    msg = refused(tmp_path, "services: {blackhole: {tcp_ports: [70000]}}\n")
    assert "services.blackhole.tcp_ports.0" in msg and "70000" in msg and "65535" in msg
    msg = refused(tmp_path, "limits: {max_per_address: -1}\n")
    assert "limits.max_per_address" in msg and "-1" in msg and "greater than 0" in msg
    msg = refused(tmp_path, "services: {blackhole: {limits: {max_bytes_in: 0}}}\n")
    assert "services.blackhole.limits.max_bytes_in" in msg and "greater than 0" in msg
    msg = refused(tmp_path, "listen: {addresses: ['1.2.3']}\n")
    assert "listen.addresses" in msg and "1.2.3" in msg
    msg = refused(tmp_path, "persona: {preset: solaris}\n")
    assert "persona.preset" in msg and "solaris" in msg and "windows-2008r2" in msg
    msg = refused(tmp_path, "services: {gopher: {}}\n")
    assert "services.gopher: unknown service" in msg and "blackhole" in msg


def test_every_problem_is_reported_at_once(tmp_path):
    msg = refused(tmp_path, "limits: {idle_timeout: -1}\n"
                            "services: {blackhole: {tcp_ports: [0]}}\n")
    assert "limits.idle_timeout" in msg and "services.blackhole.tcp_ports.0" in msg


def test_unreadable_or_malformed_files(tmp_path):
    assert "not valid YAML" in refused(tmp_path, "a: [\n")
    assert "must be a mapping" in refused(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="cannot read"):
        configmod.load(tmp_path / "missing.yaml")


# ------------------------------------------------------------------ the CLI


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "muscipula", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_config_check_exit_status(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("limits: {idle_timeout: 30}\n")
    res = cli("config", "check", str(good))
    assert res.returncode == 0 and "ok" in res.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("services: {blackhole: {tcp_ports: [70000]}}\nlimits: {max_children: -2}\n")
    res = cli("config", "check", str(bad))
    assert res.returncode == 2
    assert "services.blackhole.tcp_ports.0" in res.stderr and "70000" in res.stderr
    assert "limits.max_children" in res.stderr and "-2" in res.stderr
    assert "Traceback" not in res.stderr


def test_config_show_round_trips(tmp_path):
    res = cli("config", "show")
    assert res.returncode == 0
    shown = yaml.safe_load(res.stdout)
    assert shown["listen"]["addresses"] == ["0.0.0.0", "::"]
    path = tmp_path / "shown.yaml"
    path.write_text(res.stdout)
    assert cli("config", "check", str(path)).returncode == 0


def test_run_with_bad_config_exits_2_and_starts_nothing(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"services: {{blackhole: {{tcp_ports: [{port}], udp_ports: [], "
                   "colour: red}}\n")
    state = tmp_path / "state"
    res = cli("run", "--config", str(bad), "--state-dir", str(state), "--listen", "127.0.0.1")
    assert res.returncode == 2
    assert "services.blackhole.colour: unknown key" in res.stderr
    assert not state.exists()  # no database, no secrets, nothing
    with socket.socket() as s:  # and the port was never taken
        s.bind(("127.0.0.1", port))
    res = cli("run", "--listen", "300.1.1.1", "--state-dir", str(state))
    assert res.returncode == 2 and "300.1.1.1" in res.stderr and not state.exists()
