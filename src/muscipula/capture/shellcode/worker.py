"""Emulating candidate shellcode with speakeasy, in a worker process (never the server's).

Imported only in worker processes: speakeasy and unicorn are large, and a fault in
them must not take the server down. Each emulation gets a fresh emulator; speakeasy
keeps the PEB's module list in a class attribute, which a second emulation in the
same process would inherit (its module walk then reads the first one's addresses),
so that list is reset before each run.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from typing import Any

import speakeasy
import speakeasy.windows.objman as objman

from muscipula.capture.shellcode.profile import findings, short_name

_DEFAULT = os.path.join(os.path.dirname(speakeasy.__file__), "configs", "default.json")
with open(_DEFAULT, encoding="utf-8") as _f:
    BASE_CONFIG: dict[str, Any] = json.load(_f)
#: characters of one argument kept in a profile
MAX_ARG = 2048


def _config(timeout: float, max_api_calls: int) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE_CONFIG)
    # whole seconds: speakeasy hands seconds * 10**6 to unicorn, which takes only an int
    cfg["timeout"] = max(1, math.ceil(timeout))
    cfg["max_api_count"] = max_api_calls
    cfg.setdefault("analysis", {})["strings"] = False
    cfg["analysis"]["memory_tracing"] = False
    return cfg


def _arg(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_ARG]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return str(value)[:MAX_ARG]


def run_once(data: bytes, entry: int, timeout: float, max_api_calls: int) -> dict[str, Any]:
    """One emulation of `data` from offset `entry`: its API trace and how it ended."""
    objman.Process.ldr_entries = []
    objman.Driver.ldr_entries = []
    se = speakeasy.Speakeasy(config=_config(timeout, max_api_calls))
    error: dict[str, Any] = {}
    try:
        base = se.load_shellcode(None, "x86", data=data)
        se.run_shellcode(base, offset=entry)
    except Exception as exc:  # a crash of the emulator is a finding of its own
        error = {"type": type(exc).__name__}
    report = se.get_report()
    points = report.get("entry_points") or [{}]
    point = points[0]
    apis = point.get("apis") or []
    trace = [{"call": short_name(str(a.get("api_name", ""))),
              "args": [_arg(x) for x in a.get("args") or []],
              "return": _arg(a.get("ret_val"))} for a in apis[:max_api_calls]]
    err = point.get("error") or error
    return {"entry": entry, "profile": trace,
            "error": err.get("type") if isinstance(err, dict) else None}


def emulate(data: bytes, entries: list[int], timeout: float,
            max_api_calls: int) -> dict[str, Any]:
    """Try each entry in order; the first that calls any API is the window's result."""
    logging.disable(logging.CRITICAL)  # speakeasy logs every fault; the result says enough
    tried: list[dict[str, Any]] = []
    for entry in entries:
        result = run_once(data, entry, timeout, max_api_calls)
        if result["profile"]:
            found = findings(result["profile"])
            result.update(offers=found.offers, services=found.services,
                          commands=found.commands)
            return result
        tried.append(result)
    last = tried[-1] if tried else {"entry": None, "profile": [], "error": None}
    return {**last, "offers": [], "services": [], "commands": []}
