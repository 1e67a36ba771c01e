"""Nothing a scanner could match across installs: no fixed identifiers in the shipped
code, and every per-install value differs between two fresh state directories."""

from __future__ import annotations

import json
import re
import uuid
from importlib import resources
from pathlib import Path

import pytest
from cryptography import x509

from muscipula import certs, services
from muscipula import config as configmod
from muscipula.persona import PRESETS, resolve

SRC = Path(resources.files("muscipula"))  # type: ignore[arg-type]
# a GUID, or a long hex run with at least one letter (decimal limits are fine)
FIXED_ID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
                      r"|\b(?=[0-9a-f]*[a-f])[0-9a-f]{16,}\b", re.IGNORECASE)


def test_no_fixed_guids_or_hex_ids_in_shipped_code():
    hits = []
    for path in sorted(SRC.rglob("*")):
        if path.suffix not in (".py", ".yaml", ".sql") or "__pycache__" in path.parts:
            continue
        for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if FIXED_ID.search(line):
                hits.append(f"{path.relative_to(SRC)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


def _install(state: Path, preset: str) -> dict[str, object]:
    cfg = configmod.load(extra={"persona": {"preset": preset}})
    persona = resolve(cfg, state)
    _key, cert_path = certs.ensure(persona)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    services.get("mysql").build(services.context("mysql", cfg, state, persona=persona))
    values = json.loads((state / "secrets.json").read_text())
    return {"hostname": persona.hostname, "serial": cert.serial_number,
            "key": cert.public_key().public_numbers().n, "id_base": persona.id_base,
            **{k: values[k] for k in values if k.startswith("mysql.")}}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_two_fresh_installs_share_no_identifier(tmp_path, preset):
    a, b = _install(tmp_path / "a", preset), _install(tmp_path / "b", preset)
    assert a.keys() == b.keys()
    same = [k for k in a if a[k] == b[k] and k != "hostname"]
    assert not same, same
    if preset == "windows-2008r2":  # "{word}{digit2}" may collide once in ~2000 installs
        assert a["hostname"] != b["hostname"]
    if "5.5" in PRESETS[preset]["products"]["mysql"]["version"]:
        assert "mysql.server_uuid" not in a  # 5.5 has no server_uuid
    else:
        # mysqld's own UUID(): version 1, a unicast node
        u = uuid.UUID(str(a["mysql.server_uuid"]))
        assert u.version == 1 and not u.node & (1 << 40)

