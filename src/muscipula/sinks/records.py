"""The protocols' sink records (tables, row writers, JSON folders), loaded without the protocols.

Each protocol keeps how its incidents are recorded in `protocols/<name>/records.py`,
beside its machine, and registers there with `logsql.table`/`logsql.writer` and
`jsonlog.detail`/`jsonlog.collect`. The sink process needs those registrations and
nothing else: importing a protocol package runs its `__init__`, which builds the
service (machines, parsers, crypto, pydantic models) and costs tens of MiB per child.
So the records modules are loaded here from their files under their own dotted
names, without running the package `__init__`. A records module must therefore
import only the standard library, `muscipula.incidents` and `muscipula.sinks`.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)
PACKAGE = "muscipula.protocols"


def _protocols_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # imports only protocols/__init__.py (a docstring)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


def load(name: str) -> ModuleType | None:
    """`protocols/<name>/records.py` as `muscipula.protocols.<name>.records`; None if none."""
    dotted = f"{PACKAGE}.{name}.records"
    module = sys.modules.get(dotted)
    if module is not None:
        return module
    path = _protocols_dir() / name / "records.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(dotted, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[dotted] = module  # the package, imported later, finds it and reuses it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[dotted]
        raise
    return module


def load_all() -> list[str]:
    """Every protocol's records; the names of those loaded (one broken module is logged)."""
    loaded = []
    for path in sorted(_protocols_dir().glob("*/records.py")):
        name = path.parent.name
        try:
            if load(name) is not None:
                loaded.append(name)
        except Exception:
            log.exception("the sink records of %s could not be loaded", name)
    return loaded
