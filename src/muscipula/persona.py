"""The host every service speaks for: a shipped preset plus per-install values."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from muscipula.config import Config, merge
from muscipula.secrets import Secrets, random_text

PRESETS: dict[str, dict[str, Any]] = yaml.safe_load(
    resources.files("muscipula").joinpath("personas.yaml").read_text("utf-8")
)

# Host-name stems a Linux admin might pick; one is drawn per install.
_WORDS = (
    "web", "www", "srv", "app", "db", "mail", "files", "backup", "intranet", "dev",
    "prod", "node", "host", "vm", "portal", "shop", "api", "cloud", "office", "nas",
)


def _hostname(pattern: str) -> str:
    import secrets as rnd

    return (
        pattern.replace("{alnum11}", random_text(11))
        .replace("{word}", rnd.choice(_WORDS))
        .replace("{digit2}", f"{rnd.randbelow(99) + 1:02d}")
    )


@dataclass(frozen=True)
class PersonaView:
    """Resolved persona: preset facts, config overrides and per-install secrets."""

    preset_name: str
    facts: dict[str, Any]
    secrets: Secrets
    state_dir: Path
    hostname_override: str | None = None
    domain_override: str | None = None
    workgroup_override: str | None = None

    @cached_property
    def hostname(self) -> str:
        if self.hostname_override:
            return self.hostname_override
        pattern = self.facts["hostname_pattern"]
        return self.secrets.get("persona.hostname", lambda: _hostname(pattern))

    @property
    def netbios_name(self) -> str:
        return self.hostname.upper()[:15]

    @property
    def domain(self) -> str:
        return self.domain_override if self.domain_override is not None else self.facts["domain"]

    @property
    def workgroup(self) -> str:
        if self.workgroup_override is not None:
            return self.workgroup_override
        return self.facts["workgroup"]

    @property
    def fqdn(self) -> str:
        return f"{self.hostname}.{self.domain}" if self.domain else self.hostname

    @property
    def os_family(self) -> str:
        return self.facts["os_family"]

    @property
    def windows_version(self) -> str:
        """major.minor.build, as cmd.exe's banner and `ver` print it."""
        return f"{self.facts.get('os_version', '6.1')}.{self.facts.get('os_build', 7601)}"

    def emulated_identity(self) -> dict[str, str]:
        """Who the machine emulated shellcode runs on says it is: the host SMB and the
        others name, never the emulator's own defaults; with the Windows build where the
        persona is Windows (only there do the shells it opens get a cmd.exe)."""
        who = {"hostname": self.netbios_name, "domain": self.workgroup,
               "user": "Administrator"}
        if self.os_family == "windows":  # a cmd.exe to answer shells with
            who["version"] = self.windows_version
        return who

    def product(self, service: str) -> dict[str, Any]:
        """What `service` claims to be (product, version, banners) for this persona."""
        return dict(self.facts.get("products", {}).get(service, {}))

    def guid(self, key: str) -> uuid.UUID:
        return uuid.UUID(self.secrets.get(f"guid.{key}", lambda: str(uuid.uuid4())))

    @cached_property
    def id_base(self) -> int:
        """Where connection and thread ids start, so two installs never share a sequence."""
        return self.secrets.number("persona.id_base", 1_000, 400_000)

    @cached_property
    def boot_time_offset(self) -> int:
        """Seconds of plausible uptime before our start, fixed per install."""
        return self.secrets.number("persona.uptime_offset", 3 * 86400, 90 * 86400)


def resolve(config: Config, state_dir: Path) -> PersonaView:
    facts = merge(PRESETS[config.persona.preset], {"products": config.persona.overrides})
    return PersonaView(
        preset_name=config.persona.preset,
        facts=facts,
        secrets=Secrets(state_dir / "secrets.json"),
        state_dir=state_dir,
        hostname_override=config.persona.hostname,
        domain_override=config.persona.domain,
        workgroup_override=config.persona.workgroup,
    )
