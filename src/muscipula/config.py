"""Reading and checking the one YAML config, merged over the embedded default.

Every limit lives here with its default, so a reader finds them in one place.
Errors name the key path, the value and what was expected; callers turn a
`ConfigError` into exit status 2 before anything starts.
"""

from __future__ import annotations

import copy
import ipaddress
import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

Port = Annotated[int, Field(ge=1, le=65535)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Field(gt=0, le=86400 * 7)]


class ConfigError(Exception):
    """The config is unusable; the message is meant for the operator as is."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)


class Limits(Strict):
    """Per-connection and global bounds enforced by the drivers."""

    max_connections: PositiveInt = 20000
    max_per_address: PositiveInt = 256
    idle_timeout: Seconds = 120.0
    max_session_time: Seconds = 1800.0
    max_bytes_in: PositiveInt = 64 * 1024 * 1024
    max_buffered_out: PositiveInt = 1024 * 1024
    #: per connection, each chunk counted with its 13-byte head (and a repeated chunk as
    #: if stored again, which it is in the file)
    max_transcript_bytes: NonNegInt = 1024 * 1024
    #: of those, bytes the server sent: its answers follow from the persona and the
    #: input, so past the first ones they are not worth their cost under a flood
    max_transcript_out_bytes: NonNegInt = 64 * 1024
    max_children: PositiveInt = 8
    child_accept_timeout: Seconds = 30.0
    max_udp_peers: PositiveInt = 4096
    #: transcript bytes all open connections together may hold before they are written
    #: (each also stops at its own max_transcript_bytes); past it, chunks are left out
    max_transcript_memory: NonNegInt = 128 * 1024 * 1024


class LimitsOverride(Strict):
    """A service may tighten or loosen any global limit for its own connections."""

    max_per_address: PositiveInt | None = None
    idle_timeout: Seconds | None = None
    max_session_time: Seconds | None = None
    max_bytes_in: PositiveInt | None = None
    max_buffered_out: PositiveInt | None = None
    max_transcript_bytes: NonNegInt | None = None
    max_transcript_out_bytes: NonNegInt | None = None
    max_children: PositiveInt | None = None
    child_accept_timeout: Seconds | None = None
    max_udp_peers: PositiveInt | None = None

    def apply(self, base: Limits) -> Limits:
        changes = {k: v for k, v in self.model_dump().items() if v is not None}
        return base.model_copy(update=changes)


class ServiceConfig(Strict):
    """Keys every service has; each service's own model adds to it."""

    enabled: bool = True
    tcp_ports: list[Port] = []
    tls_ports: list[Port] = []
    udp_ports: list[Port] = []
    transcripts: bool = True
    limits: LimitsOverride = LimitsOverride()


class Listen(Strict):
    addresses: list[str] = ["0.0.0.0", "::"]

    @field_validator("addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_address(item)
        if not value:
            raise ValueError("at least one address is needed")
        return value


class Persona(Strict):
    """Which shipped host the services speak for, and what of it to override."""

    preset: str = "windows-2008r2"
    hostname: str | None = None
    domain: str | None = None
    workgroup: str | None = None
    overrides: dict[str, dict[str, Any]] = {}


class Rotation(Strict):
    max_bytes: NonNegInt = 100 * 1024 * 1024
    daily: bool = True
    keep: NonNegInt = 30


class SinkBase(Strict):
    enabled: bool = True
    queue_size: PositiveInt = 100_000
    #: at half a full queue, connections are not read until it is down to two fifths:
    #: a flood is slowed to what this sink records rather than recorded in part
    backpressure: bool = True


class LogSqlSink(SinkBase):
    file: str = "logsql.sqlite"
    batch_size: PositiveInt = 5000


class JsonSink(SinkBase):
    file: str = "log/connections.json"
    flat_data: bool = False
    rotation: Rotation = Rotation()
    max_open_connections: PositiveInt = 50_000
    max_items_per_connection: PositiveInt = 1000
    #: JSON text held for connections still open, over all of them; past it, items
    #: (requests, commands) are left out of their line and counted in `items_left_out`
    max_pending_bytes: PositiveInt = 64 * 1024 * 1024


class HpfeedsSink(SinkBase):
    enabled: bool = False
    #: a broker far away must not stall the sensor: its queue drops when full
    backpressure: bool = False
    host: str = "127.0.0.1"
    port: Port = 10000
    ident: str = ""
    secret: str = ""
    reconnect_delay: Seconds = 10.0


class Sinks(Strict):
    logsql: LogSqlSink = LogSqlSink()
    jsonlog: JsonSink = JsonSink()
    hpfeeds: HpfeedsSink = HpfeedsSink()
    #: the longest the network is held for a sink with backpressure that does not drain
    #: (a stuck disk or process); then it is read again and that sink's queue drops
    max_hold: Seconds = 30.0
    #: niceness of the sink process: recording is work that may wait, answering the
    #: network is not (backpressure keeps the wait bounded)
    nice: int = Field(10, ge=0, le=19)
    #: ended connections each sink remembers, so that what comes after the end (a
    #: download, an emulation's findings) is still written with its connection
    max_late_connections: PositiveInt = 50_000


class Store(Strict):
    dir: str = "binaries"
    max_file_bytes: PositiveInt = 64 * 1024 * 1024
    max_total_bytes: PositiveInt = 8 * 1024 * 1024 * 1024
    max_open_files: PositiveInt = 1024


class Download(Strict):
    """Fetching the URLs attackers offer (download.offer), as the reference's curl, ftp and
    tftp handlers did, but bounded and never towards the operator's own networks."""

    enabled: bool = True
    #: tcp: a connect-back stager's handler, read for the stage it sends (capture/download/tcp)
    schemes: list[str] = ["http", "https", "ftp", "tftp", "tcp"]
    max_bytes: PositiveInt = 16 * 1024 * 1024
    #: a whole fetch, redirects included
    timeout: Seconds = 120.0
    connect_timeout: Seconds = 10.0
    #: a transfer slower than this many bytes a second over `slow_window` is given up
    min_rate: NonNegInt = 10
    slow_window: Seconds = 30.0
    max_redirects: NonNegInt = 5
    max_concurrent: PositiveInt = 8
    #: offers waiting for a slot; more are refused and counted
    max_pending: PositiveInt = 256
    #: the same URL is fetched once in this many seconds; later offers reuse that result
    repeat_window: NonNegInt = 3600
    #: destinations allowed although loopback, private, link-local or reserved (CIDRs);
    #: every other such destination is refused (tests allow 127.0.0.0/8)
    allow_networks: list[str] = []
    user_agent: str = "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)"
    #: tcp://: seconds without a byte, once the stage started, that end it
    stage_idle: Seconds = 5.0
    #: a bind stager's port is opened for its attacker's handler (capture/bindstage.py),
    #: this long, at most this many at once
    bind_stages: bool = True
    bind_wait: Seconds = 60.0
    max_bind_listeners: PositiveInt = 4
    #: shells emulated shellcode opens (a cmd.exe on a bind or connect-back socket) are
    #: answered as cmd.exe on Windows personas (capture/shellsession.py): a session ends
    #: after `shell_idle` seconds without input, `shell_timeout` in all, or
    #: `max_shell_bytes` received; at most `max_shells` connect-back sessions at once
    shells: bool = True
    shell_idle: Seconds = 60.0
    shell_timeout: Seconds = 600.0
    max_shell_bytes: PositiveInt = 64 * 1024
    max_shells: PositiveInt = 4
    #: URLs remembered for `repeat_window` (fetches running or waiting are never forgotten)
    memo_entries: PositiveInt = 4096
    #: connections one running fetch may serve besides the one that offered it
    max_waiters: PositiveInt = 256
    #: offers one connection may make; later ones are refused (reason "limit")
    max_offers_per_connection: PositiveInt = 64
    #: TFTP: seconds without an answer before a packet is sent again, and how often
    tftp_timeout: Seconds = 2.0
    tftp_retries: NonNegInt = 5
    #: offers from these services name a file the peer uploaded to this host (already
    #: captured by the service): they are not fetched
    upload_sources: list[str] = ["ftp", "tftp"]

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ValueError(f"not a network: {net!r}") from exc
        return value


class Shellcode(Strict):
    """Finding shellcode in what peers sent and emulating it to learn what it fetches."""

    enabled: bool = True
    #: services whose inbound bytes are scanned when a connection ends (from its transcript)
    services: list[str] = ["smb", "epmapper", "mssql", "mysql", "http", "blackhole", "ftp"]
    #: inbound bytes of one connection looked at (scanned on the event loop)
    max_scan_bytes: PositiveInt = 256 * 1024
    #: a connection is also looked at while it lasts, once its peer was quiet this many
    #: seconds, at most `live_scans` times (0: only when it ends): the shell or stager
    #: the exploit opens is then answered while the attacker still waits for it
    live_quiet: Seconds = 1.0
    live_scans: NonNegInt = 4
    #: GetPC candidates emulated per connection
    max_candidates: PositiveInt = 8
    #: emulator worker processes
    workers: PositiveInt = 1
    #: connections waiting for the emulator; more are counted and not emulated
    max_pending: PositiveInt = 64
    #: wall seconds one emulation may run
    timeout: Seconds = 5.0
    #: API calls one emulation may make
    max_api_calls: PositiveInt = 5000
    #: bytes of one window of code emulated (and stored) from where its chunk starts
    max_shellcode_bytes: PositiveInt = 64 * 1024
    #: address space of one worker process (RLIMIT_AS); an emulation needs ~200 MiB
    max_worker_memory: PositiveInt = 1024 * 1024 * 1024
    #: connections of one remote address queued or being emulated; more are dropped
    max_pending_per_source: PositiveInt = 2
    #: download offers, and shells, kept per window of code and per connection
    max_findings: PositiveInt = 16
    #: API calls of one emulation kept in its emu.profile (the rest is marked as cut)
    max_profile_calls: PositiveInt = 1000
    #: characters of one API argument kept in a profile (longer ones are marked as cut)
    max_profile_arg: PositiveInt = 256


class Capture(Strict):
    download: Download = Download()
    shellcode: Shellcode = Shellcode()


class Paths(Strict):
    state_dir: str | None = None
    transcripts: str = "transcripts"


class RunAs(Strict):
    user: str | None = None
    group: str | None = None


class Config(Strict):
    listen: Listen = Listen()
    persona: Persona = Persona()
    limits: Limits = Limits()
    sinks: Sinks = Sinks()
    store: Store = Store()
    capture: Capture = Capture()
    paths: Paths = Paths()
    run_as: RunAs = RunAs()
    services: dict[str, ServiceConfig] = {}

    def state_dir(self) -> Path:
        if self.paths.state_dir:
            return Path(self.paths.state_dir).expanduser()
        if os.geteuid() == 0:
            return Path("/var/lib/muscipula")
        base = os.environ.get("XDG_STATE_HOME") or "~/.local/state"
        return Path(base).expanduser() / "muscipula"

    def service_limits(self, name: str) -> Limits:
        return self.services[name].limits.apply(self.limits)


def default_text() -> str:
    return resources.files("muscipula").joinpath("default.yaml").read_text("utf-8")


def merge(base: Any, over: Any) -> Any:
    """Deep-merge mappings; anything else in `over` replaces what `base` had."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(over)


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed where `loc` (ending in the unknown key) points."""
    for part in loc[:-1]:
        if isinstance(part, int) or part not in model.model_fields:
            return []
        sub = model.model_fields[part].annotation
        for arg in (sub, *getattr(sub, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                model = arg
                break
        else:
            return []
    return list(model.model_fields)


def _describe(err: Any, prefix: tuple[Any, ...], model: type[BaseModel]) -> str:
    path = ".".join(str(p) for p in (*prefix, *err["loc"])) or "(top)"
    value = err.get("input")
    shown = repr(value) if not isinstance(value, dict) else "{...}"
    if err["type"] == "extra_forbidden":
        known = _known_keys(model, tuple(err["loc"]))
        expected = f"; expected one of: {', '.join(known)}" if known else ""
        return f"{path}: unknown key (value {shown}{expected})"
    return f"{path}: {err['msg'].lower()} (got {shown})"


def _lines(exc: ValidationError, model: type[BaseModel],
           prefix: tuple[Any, ...] = ()) -> list[str]:
    return [_describe(e, prefix, model) for e in exc.errors()]


def _fail(lines: list[str]) -> None:
    raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None


def _load_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping, got {type(data).__name__}")
    return data


def parse(raw: dict[str, Any]) -> Config:
    """Validate a merged mapping; services are checked against their own models."""
    from muscipula import services as registry

    raw = dict(raw)
    raw_services = raw.pop("services", {}) or {}
    if not isinstance(raw_services, dict):
        raise ConfigError(f"services: expected a mapping, got {raw_services!r}")
    errors: list[str] = []  # every problem at once, not one per attempt
    try:
        base = Config.model_validate(raw)
    except ValidationError as exc:
        errors += _lines(exc, Config)
    checked: dict[str, ServiceConfig] = {}
    for name, body in raw_services.items():
        spec = registry.get(name)
        if spec is None:
            known = ", ".join(registry.names())
            errors.append(f"services.{name}: unknown service (expected one of: {known})")
            continue
        try:
            checked[name] = spec.config_model.model_validate(body or {})
        except ValidationError as exc:
            errors += _lines(exc, spec.config_model, ("services", name))
    from muscipula.persona import PRESETS

    preset = raw.get("persona", {}).get("preset") if isinstance(raw.get("persona"), dict) \
        else None
    if isinstance(preset, str) and preset not in PRESETS:
        errors.append(f"persona.preset: unknown preset {preset!r} "
                      f"(expected one of: {', '.join(PRESETS)})")
    if errors:
        _fail(errors)
    return base.model_copy(update={"services": checked})


def load(path: str | Path | None = None, extra: dict[str, Any] | None = None) -> Config:
    """The embedded default, with the file at `path` and then `extra` merged over it."""
    raw = _load_yaml(default_text(), "embedded default")
    if path is not None:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        raw = merge(raw, _load_yaml(text, str(path)))
    if extra:
        raw = merge(raw, extra)
    return parse(raw)


def dump(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
