"""Emulating candidate shellcode with speakeasy, in a worker process (never the server's).

Imported only in worker processes: speakeasy and unicorn are large, and a fault in
them must not take the server down. Each emulation gets a fresh emulator; speakeasy
keeps the PEB's module list in a class attribute, which a second emulation in the
same process would inherit (its module walk then reads the first one's addresses),
so that list is reset before each run.

Speakeasy's own timeout is unicorn's, which does not count the time spent in its
Python API handlers (a loop of WriteFile calls of a megabyte each runs far past it), so
an interval timer stops the emulation from here too. The emulated machine's identity
(hostname, domain, user, and what derives from them) replaces speakeasy's defaults,
which name the emulator and could reach an attacker in a URL the shellcode builds.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import resource
import signal
import threading
from collections.abc import Callable
from typing import Any

import speakeasy
import speakeasy.windows.objman as objman

from muscipula.capture.shellcode.pool import Limits
from muscipula.capture.shellcode.profile import findings, short_name

_DEFAULT = os.path.join(os.path.dirname(speakeasy.__file__), "configs", "default.json")
with open(_DEFAULT, encoding="utf-8") as _f:
    BASE_CONFIG: dict[str, Any] = json.load(_f)
#: characters of one argument looked at for findings (a URL, a command line)
MAX_ARG = 2048
#: who the emulated machine is unless told: a plausible stand-alone Windows host
IDENTITY = {"hostname": "WIN-R8Q2K6T0MHD", "domain": "WORKGROUP", "user": "Administrator",
            "address": "192.168.1.23"}
#: seconds between repeated stops once the timeout is reached (a stop may land between runs)
_RESTOP = 0.5


def limit_memory(max_bytes: int) -> None:
    """Cap this process's address space (never raising a cap already lower)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = max_bytes if hard == resource.RLIM_INFINITY else min(max_bytes, hard)
    if soft == resource.RLIM_INFINITY or soft > cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _derived(hostname: str) -> tuple[str, str, str]:
    """A machine SID, a MAC address and an adapter GUID that follow from the hostname,
    so that one persona's machine keeps them and no two installs share them."""
    h = hashlib.sha256(b"machine\x00" + hostname.encode()).digest()
    sid = "S-1-5-21-" + "-".join(str(int.from_bytes(h[i:i + 4], "little") % 4000000000
                                     + 100000000) for i in (0, 4, 8))
    mac = "-".join(f"{b:02X}" for b in (0x00, 0x15, 0x5D, h[12], h[13], h[14]))
    g = h[16:32].hex().upper()
    guid = f"{{{g[:8]}-{g[8:12]}-{g[12:16]}-{g[16:20]}-{g[20:32]}}}"
    return sid, mac, guid


def _neighbour(address: str, hostname: str) -> str:
    """Another private IPv4 address, per install, for every name looked up."""
    h = hashlib.sha256(b"dns\x00" + hostname.encode()).digest()
    other = f"10.{h[0]}.{h[1]}.{2 + h[2] % 250}"
    return other if other != address else f"10.{h[0]}.{h[1]}.{3 + h[2] % 250}"


def _config(timeout: float, max_api_calls: int,
            identity: dict[str, str] | None = None) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE_CONFIG)
    # whole seconds: speakeasy hands seconds * 10**6 to unicorn, which takes only an int
    cfg["timeout"] = max(1, math.ceil(timeout))
    cfg["max_api_count"] = max_api_calls
    cfg.setdefault("analysis", {})["strings"] = False
    cfg["analysis"]["memory_tracing"] = False
    who = {**IDENTITY, **{k: v for k, v in (identity or {}).items() if v}}
    host, user, address = who["hostname"], who["user"], who["address"]
    sid, mac, guid = _derived(host)
    cfg["hostname"] = host
    cfg["domain"] = who["domain"]
    cfg["user"] = {**cfg.get("user", {}), "name": user, "sid": f"{sid}-500"}
    cfg["command_line"] = "C:\\Windows\\system32\\svchost.exe -k netsvcs"
    cfg.setdefault("env", {})["userprofile"] = f"C:\\Users\\{user}"
    net = cfg.setdefault("network", {})
    # a name the shellcode looks up gets an address of the host's network that is not
    # the host's own (a connect-back there is refused as private, never made to itself)
    net.setdefault("dns", {})["names"] = {host: address, "localhost": "127.0.0.1",
                                          "default": _neighbour(address, host)}
    for adapter in net.get("adapters", []):
        adapter.update(name=guid, mac_address=mac, ip_address=address,
                       subnet_mask="255.255.255.0")
    return cfg


def _cut(value: Any, limit: int) -> Any:
    """An argument as kept: scalars as they are, anything else as text of at most
    `limit` characters, a cut one saying how much was left out."""
    if isinstance(value, int | float | bool) or value is None:
        return value
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}[cut {len(text) - limit} chars]"


def _profile(trace: list[dict[str, Any]], limits: Limits) -> list[dict[str, Any]]:
    """The trace as kept in emu.profile: at most profile_calls calls, then one marker."""
    kept = [{"call": t["call"], "args": [_cut(a, limits.profile_arg) for a in t["args"]],
             "return": _cut(t["return"], limits.profile_arg)}
            for t in trace[:limits.profile_calls]]
    if len(trace) > len(kept):
        kept.append({"call": "[cut]", "args": [len(trace) - len(kept)], "return": None})
    return kept


class _Stopper:
    """Stops the emulation from a timer signal once its time is up (main thread only)."""

    def __init__(self, se: Any, timeout: float) -> None:
        self.se, self.timeout = se, timeout
        self.armed = threading.current_thread() is threading.main_thread()
        self.fired = False

    def __enter__(self) -> _Stopper:
        if self.armed:
            self.previous = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.timeout, _RESTOP)
        return self

    def _fire(self, _signum: int, _frame: Any) -> None:
        self.fired = True
        try:
            self.se.emu.stop()
        except Exception:  # not running yet, or between runs: the next tick tries again
            pass

    def __exit__(self, *_exc: object) -> None:
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)


def run_once(data: bytes, entry: int, timeout: float, max_api_calls: int,
             limits: Limits | None = None) -> dict[str, Any]:
    """One emulation of `data` from offset `entry`: its API trace and how it ended."""
    limits = limits or Limits()
    objman.Process.ldr_entries = []
    objman.Driver.ldr_entries = []
    se = speakeasy.Speakeasy(config=_config(timeout, max_api_calls, limits.identity))
    error: dict[str, Any] = {}
    with _Stopper(se, timeout) as stopper:
        try:
            base = se.load_shellcode(None, "x86", data=data)
            se.run_shellcode(base, offset=entry)
        except Exception as exc:  # a crash of the emulator is a finding of its own
            error = {"type": type(exc).__name__}
    try:
        report = se.get_report()
    except Exception as exc:  # MemoryError under the address space cap, mostly
        report, error = {}, {"type": type(exc).__name__}
    points = report.get("entry_points") or [{}]
    point = points[0]
    apis = point.get("apis") or []
    trace = [{"call": short_name(str(a.get("api_name", ""))),
              "args": [_cut(x, MAX_ARG) for x in a.get("args") or []],
              "return": _cut(a.get("ret_val"), MAX_ARG)} for a in apis[:max_api_calls]]
    err = point.get("error") or error
    kind = err.get("type") if isinstance(err, dict) else None
    if stopper.fired and not kind:
        kind = "timeout"
    return {"entry": entry, "trace": trace, "error": kind}


def emulate(data: bytes, entries: list[int], timeout: float, max_api_calls: int,
            limits: Limits | None = None,
            started: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Try each entry in order; the first that calls any API is the window's result.

    The address space is capped first (a no-op when the worker did it already)."""
    limits = limits or Limits()
    limit_memory(limits.memory)
    logging.disable(logging.CRITICAL)  # speakeasy logs every fault; the result says enough
    last: dict[str, Any] = {"entry": None, "trace": [], "error": None}
    for entry in entries:
        if started is not None:
            started(entry)
        last = run_once(data, entry, timeout, max_api_calls, limits)
        if last["trace"]:
            break
    trace = last.pop("trace")
    found = findings(trace, limits.findings)
    return {**last, "profile": _profile(trace, limits), "offers": found.offers,
            "services": found.services, "shells": found.shells, "commands": found.commands}
