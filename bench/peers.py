"""The peer honeypots, each in its own venv, installed on first use.

OpenCanary runs under twistd from a folder holding its opencanary.conf;
qeeqbox honeypots runs one process per service. A peer that cannot be
installed or started is skipped with a printed note, never an error.
qeeqbox binds 0.0.0.0 whatever it is told and kills whatever holds its port,
so it only ever gets a port found free a moment before.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from lib import HOST, Server, wait_tcp, wait_udp

PACKAGES = {"opencanary": "opencanary", "qeeqbox": "honeypots"}


class Peers:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.broken: dict[str, str] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-peers-"))

    def python(self, name: str) -> Path | None:
        """The peer's venv python, installing the package into a fresh venv if needed."""
        if name in self.broken:
            return None
        venv = self.root / ("honeypots" if name == "qeeqbox" else name)
        py = venv / "bin" / "python"
        mark = venv / ".installed"
        if not mark.exists():
            print(f"  installing {name} into {venv} (once)", flush=True)
            try:
                venv.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                               capture_output=True, timeout=120)
                subprocess.run([str(py), "-m", "pip", "install", "-q", PACKAGES[name]],
                               check=True, capture_output=True, timeout=900)
                subprocess.run([str(py), "-c", f"import {PACKAGES[name]}"], check=True,
                               capture_output=True, timeout=60)
                mark.write_text("ok\n")
            except (OSError, subprocess.SubprocessError) as exc:
                self.broken[name] = f"{name} did not install ({type(exc).__name__})"
                print(f"  note: {self.broken[name]}; skipped", flush=True)
                return None
        return py

    def _fail(self, name: str, why: str) -> None:
        print(f"  note: {name} did not start ({why}); skipped", flush=True)

    def opencanary(self, ports: dict[str, int]) -> Server | None:
        """OpenCanary with exactly the modules in `ports` (ftp, http, mysql, mssql) on 127.0.0.1.

        Only TCP modules: its SIP module (UDP) logs and never replies, so is not measured.
        """
        py = self.python("opencanary")
        if py is None:
            return None
        work = Path(tempfile.mkdtemp(prefix="oc-", dir=self.tmp))
        pkg = subprocess.run([str(py), "-c", "import opencanary,os;"
                              "print(os.path.dirname(opencanary.__file__))"],
                             capture_output=True, text=True, check=True).stdout.strip()
        settings = json.loads(Path(pkg, "data", "settings.json").read_text())
        for key in list(settings):
            if key.endswith(".enabled"):
                settings[key] = False
        settings["device.listen_addr"] = HOST
        for svc, port in ports.items():
            settings[f"{svc}.enabled"] = True
            settings[f"{svc}.port"] = port
        settings["http.log_redirect_request"] = True  # else it does not log GET /
        settings["logger"]["kwargs"]["handlers"] = {
            "file": {"class": "logging.FileHandler", "filename": str(work / "opencanary.log")}}
        (work / "opencanary.conf").write_text(json.dumps(settings, indent=1))
        twistd = py.parent / "twistd"
        tac = py.parent / "opencanary.tac"
        log = open(work / "twistd.log", "wb")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen([str(twistd), "-n", "--pidfile", str(work / "twistd.pid"),
                                 "-y", str(tac)], cwd=work, stdout=log,
                                stderr=subprocess.STDOUT)
        server = Server("opencanary", proc, workdir=work)
        try:
            for port in ports.values():
                wait_tcp(port, proc)
        except RuntimeError as exc:
            server.stop()
            self._fail("opencanary", str(exc))
            return None
        return server

    def qeeqbox(self, service: str, port: int, transport: str = "tcp") -> Server | None:
        """One qeeqbox honeypots process for `service` on `port` (it forks the server).

        Its sip listens on UDP, its mssql on TCP; both always refuse or never check a login.
        """
        py = self.python("qeeqbox")
        if py is None:
            return None
        work = Path(tempfile.mkdtemp(prefix="qb-", dir=self.tmp))
        log = open(work / "honeypots.log", "wb")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen([str(py), "-m", "honeypots", "--setup", f"{service}:{port}",
                                 "--ip", HOST, "--termination-strategy", "signal"],
                                cwd=work, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        server = Server("qeeqbox", proc, workdir=work)
        try:
            (wait_udp if transport == "udp" else wait_tcp)(port, proc)
        except RuntimeError as exc:
            server.stop()
            self._fail("qeeqbox", str(exc))
            return None
        from lib import descendants

        server.serving_pid = descendants(proc.pid)[-1]
        return server
