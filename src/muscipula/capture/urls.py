"""Download URLs inside attacker text: shell one-liners, PowerShell, certutil, bitsadmin, ...

Shared by every protocol that sees commands (HTTP exploits, SQL, shells). Only
URLs in a download context are offered, so a spam link in a form post is not
fetched. Percent- and `${IFS}`-obfuscated commands are decoded first.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

__all__ = ["find_offers"]

MAX_SCAN = 256 * 1024  # characters of one text looked at; exploit one-liners are short
#: URLs taken from one text: a dropper fetches a dozen builds, one per CPU; past this
#: many a text is a flood (each offer is an incident and a fetch or a refusal)
MAX_OFFERS = 64

_TOOLS = re.compile(
    r"(?i)(?<![\w.-])(?:wget|curl|tftp|ftpget|ftp|lwp-download|fetch|powershell|pwsh|iwr|"
    r"invoke-webrequest|invoke-restmethod|start-bitstransfer|certutil(?:\.exe)?|"
    r"bitsadmin(?:\.exe)?|mshta|downloadfile|downloadstring|downloaddata|webclient)(?![\w-])")
_SPLIT = re.compile(r"[;\n\r|&`]|\$\(")
_URL = re.compile(r"""(?i)\b(?:https?|ftp|tftp)://[^\s'"`<>(){};|\\^]{3,2048}""")
_HOSTPATH = re.compile(
    r"(?i)^(?:[a-z0-9-]+\.)+[a-z0-9-]+(?::\d{1,5})?(?:/[^\s'\"`<>;|]*)?$")
_IFS = re.compile(r"\$\{IFS\}|\$IFS\b|\{,\}")
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_HOST = re.compile(r"(?i)^(?:[a-z0-9-]+\.)+[a-z0-9-]+$")
_WGET_OPTS_WITH_ARG = {"-o", "-O", "-P", "--output", "--output-document", "-U", "--user-agent",
                       "-A", "-H", "--header", "-e", "-T", "-t", "-m", "--max-time", "-x",
                       "-X", "-d", "--data", "-b", "-c", "-u", "--user", "-r", "-l"}


def _normalise(text: str) -> list[str]:
    """The text as sent, and as a shell would see it after the usual obfuscations."""
    variants = [text]
    plain = text
    if "%" in plain or "+" in plain:
        plain = unquote_plus(plain)
    plain = _IFS.sub(" ", plain)
    plain = plain.replace("\\/", "/").replace("&amp;", "&")
    if plain != text:
        variants.append(plain)
    return variants


def _clean(url: str) -> str:
    return url.rstrip(".,'\"")


def _words(segment: str) -> list[str]:
    return [w.strip("'\"") for w in segment.replace(",", " ").split() if w.strip("'\"")]


def _tftp(words: list[str]) -> list[str]:
    """busybox `tftp -g -r FILE HOST`, tftp-hpa `tftp HOST -c get FILE`,
    Windows `tftp -i HOST GET FILE`."""
    lower = [w.lower() for w in words]
    if "tftp" not in lower:
        return []
    args = words[lower.index("tftp") + 1:]
    low = [a.lower() for a in args]
    remote = host = port = None
    for i, a in enumerate(low):
        if (a == "-r" and i + 1 < len(args)) or (a == "get" and i + 1 < len(args)):
            remote = args[i + 1]
    for i, a in enumerate(args):
        prev = low[i - 1] if i else ""
        if prev in ("-r", "-l", "get", "-c", "-m") or a.startswith("-") or a.lower() == "get":
            continue
        if _IPV4.match(a) or _HOST.match(a):
            host = a
            if i + 1 < len(args) and args[i + 1].isdigit():
                port = args[i + 1]
            break
    if host and remote:
        hp = f"{host}:{port}" if port and port != "69" else host
        return [f"tftp://{hp}/{remote.lstrip('/')}"]
    return []


def _ftpget(words: list[str]) -> list[str]:
    """busybox `ftpget [-u U] [-p P] [-P PORT] HOST LOCAL REMOTE`."""
    lower = [w.lower() for w in words]
    if "ftpget" not in lower:
        return []
    args = words[lower.index("ftpget") + 1:]
    user = pw = port = None
    pos: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-u", "-p", "-P") and i + 1 < len(args):
            user, pw, port = (args[i + 1] if a == "-u" else user,
                              args[i + 1] if a == "-p" else pw,
                              args[i + 1] if a == "-P" else port)
            i += 2
            continue
        if not a.startswith("-"):
            pos.append(a)
        i += 1
    if len(pos) < 2:
        return []
    host, remote = pos[0], pos[-1]
    cred = f"{user}:{pw or ''}@" if user else ""
    hp = f"{host}:{port}" if port and port != "21" else host
    return [f"ftp://{cred}{hp}/{remote.lstrip('/')}"]


def _bare_hosts(words: list[str]) -> list[str]:
    """wget/curl given `host/path` without a scheme fetch it over http."""
    out = []
    lower = [w.lower() for w in words]
    for tool in ("wget", "curl", "fetch"):
        if tool not in lower:
            continue
        args = words[lower.index(tool) + 1:]
        skip = False
        for a in args:
            if skip:
                skip = False
                continue
            if a in _WGET_OPTS_WITH_ARG:
                skip = True
                continue
            if a.startswith("-") or "://" in a:
                continue
            if _HOSTPATH.match(a) and (_IPV4.match(a.split("/")[0].split(":")[0])
                                       or "/" in a):
                out.append("http://" + a)
    return out


def _ftp_script(text: str) -> list[str]:
    """Windows `echo open HOST PORT>f & echo user U P>>f & echo get FILE>>f & ftp -s:f`."""
    if not re.search(r"(?i)\bftp(?:\.exe)?\s+(?:-[a-z]+\s+)*-s:", text):
        return []
    m_open = re.search(r"(?i)\bopen\s+([\w.-]+)(?:\s+(\d{1,5}))?", text)
    gets = re.findall(r"(?i)\b(?:m?get|recv)\s+([^\s>&|]+)", text)
    if not m_open or not gets:
        return []
    m_user = re.search(r"(?i)\buser\s+(\S+)\s+([^\s>&|]+)", text)
    host, port = m_open.group(1), m_open.group(2)
    cred = f"{m_user.group(1)}:{m_user.group(2)}@" if m_user else ""
    hp = f"{host}:{port}" if port and port != "21" else host
    return [f"ftp://{cred}{hp}/{g.lstrip('/')}" for g in gets]


def find_offers(text: str) -> list[str]:
    """URLs that a command in `text` would download, in order, without duplicates, at
    most MAX_OFFERS of them (a text of a thousand wget commands stops being read there)."""
    found: dict[str, None] = {}
    for variant in _normalise(text[:MAX_SCAN]):
        if not _TOOLS.search(variant):
            continue
        found.update(dict.fromkeys(_ftp_script(variant)))
        for segment in _SPLIT.split(variant):
            if len(found) >= MAX_OFFERS:
                break
            if not _TOOLS.search(segment):
                continue
            words = _words(segment)
            found.update(dict.fromkeys(
                [_clean(m.group(0)) for m in _URL.finditer(segment)]
                + _tftp(words) + _ftpget(words) + _bare_hosts(words)))
    return list(found)[:MAX_OFFERS]
