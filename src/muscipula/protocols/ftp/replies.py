"""Reply wording of the two FTP servers a persona can be: vsftpd 3.0.x and Microsoft FTP 7.5.

A scanner judges a server by its banner, its FEAT and HELP lines and how it
words errors, so every text the machine sends comes from one `Dialect`. The
machine never writes reply text of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Keys every dialect defines; `Dialect.line(key, **values)` formats one reply line.
_VSFTPD: dict[str, str] = {
    "banner": "220 (vsFTPd {version})",
    "user": "331 Please specify the password.",
    "user_anon": "331 Please specify the password.",
    "user_anon_only": "530 This FTP server is anonymous only.",
    "user_again_same": "331 Any password will do.",
    "user_again_other": "530 Can't change to another user.",
    "user_again_guest": "530 Can't change from guest user.",
    "pass_first": "503 Login with USER first.",
    "pass_again": "230 Already logged in.",
    "login_ok": "230 Login successful.",
    "login_anon_ok": "230 Login successful.",
    "login_fail": "530 Login incorrect.",
    "login_needed": "530 Please login with USER and PASS.",
    "unknown": "500 Unknown command.",
    "denied": "550 Permission denied.",
    "http": "500 HTTP protocol commands not allowed.",
    "too_long": "500 Input line too long.",
    "timeout": "421 Timeout.",
    "syst": "215 UNIX Type: L8",
    "noop": "200 NOOP ok.",
    "quit": "221 Goodbye.",
    "pwd": '257 "{path}" is the current directory',
    "cwd_ok": "250 Directory successfully changed.",
    "cdup_ok": "250 Directory successfully changed.",
    "cwd_fail": "550 Failed to change directory.",
    "type_i": "200 Switching to Binary mode.",
    "type_a": "200 Switching to ASCII mode.",
    "type_bad": "500 Unrecognised TYPE command.",
    "mode_ok": "200 Mode set to S.",
    "mode_bad": "504 Bad MODE command.",
    "stru_ok": "200 Structure set to F.",
    "stru_bad": "504 Bad STRU command.",
    "rest": "350 Restart position accepted ({offset}).",
    "abor_idle": "225 No transfer to ABOR.",
    "abor_broken": "426 Failure writing network stream.",
    "abor_broken_in": "426 Failure reading network stream.",
    "abor_ok": "226 ABOR successful.",
    "pasv": "227 Entering Passive Mode ({address},{p1},{p2}).",
    "epsv": "229 Entering Extended Passive Mode (|||{port}|)",
    "epsv_all": "200 EPSV ALL ok.",
    "epsv_bad": "522 Bad network protocol.",
    "epsv_all_only": "500 Unknown command.",
    "listen_fail": "500 OOPS: vsf_sysutil_bind",
    "port_ok": "200 PORT command successful. Consider using PASV.",
    "port_bad": "500 Illegal PORT command.",
    "port_bounce": "500 Illegal PORT command.",
    "eprt_ok": "200 EPRT command successful. Consider using EPSV.",
    "eprt_bad": "500 Bad EPRT command.",
    "eprt_proto": "500 Bad EPRT protocol.",
    "eprt_bounce": "500 Illegal EPRT command.",
    "no_data": "425 Use PORT or PASV first.",
    "data_fail": "425 Failed to establish connection.",
    "list_mark": "150 Here comes the directory listing.",
    "list_done": "226 Directory send OK.",
    "retr_mark": "150 Opening {mode} mode data connection for {name} ({size} bytes).",
    "retr_fail": "550 Failed to open file.",
    "retr_ascii_rest": "550 No support for resume of ASCII transfer.",
    "stor_mark": "150 Ok to send data.",
    "stou_mark": "150 FILE: {name}",
    "stor_fail": "553 Could not create file.",
    "transfer_ok": "226 Transfer complete.",
    "dele_ok": "250 Delete operation successful.",
    "dele_fail": "550 Delete operation failed.",
    "rnfr_ok": "350 Ready for RNTO.",
    "rnfr_fail": "550 RNFR command failed.",
    "rnto_ok": "250 Rename successful.",
    "rnto_fail": "550 Rename failed.",
    "rnto_first": "503 RNFR required first.",
    "mkd_ok": '257 "{path}" created',
    "mkd_fail": "550 Create directory operation failed.",
    "rmd_ok": "250 Remove directory operation successful.",
    "rmd_fail": "550 Remove directory operation failed.",
    "size_fail": "550 Could not get file size.",
    "mdtm_fail": "550 Could not get file modification time.",
    "opts_utf8": "200 Always in UTF8 mode.",
    "opts_bad": "501 Option not understood.",
    "acct": "502 ACCT not implemented.",
    "allo": "202 ALLO command ignored.",
    "rein": "502 REIN not implemented.",
    "smnt": "502 SMNT not implemented.",
    "site_bad": "500 Unknown SITE command.",
    "site_help": "214 UMASK HELP",
    "auth_ok": "234 Proceed with negotiation.",
    "auth_bad": "504 Unknown AUTH type.",
    "pbsz": "200 PBSZ set to 0.",
    "pbsz_plain": "503 PBSZ needs a secure connection.",
    "prot_p": "200 PROT now Private.",
    "prot_c": "200 PROT now Clear.",
    "prot_unsupported": "536 PROT not supported.",
    "prot_bad": "504 PROT not recognised.",
    "prot_plain": "503 PROT needs a secure connection.",
    "stat_file_head": "213-Status follows:",
    "stat_file_end": "213 End of status",
    "syntax": "500 Unknown command.",
    "already_open": "150 Here comes the directory listing.",
    "stat_head": "211-FTP server status:",
    "stat_end": "211 End of status",
    "mlst_head": "250-Listing {path}",
    "mlst_end": "250 End",
    # data_connection_timeout: a stalled data channel (TLS handshake included) ends the session
    "data_timeout": "421 Data timeout. Reconnect. Sorry.",
}

_IIS: dict[str, str] = {
    "banner": "220 Microsoft FTP Service",
    "user": "331 Password required for {user}.",
    "user_anon": "331 Anonymous access allowed, send identity (e-mail name) as password.",
    "user_anon_only": "331 Password required for {user}.",
    "user_again_same": "331 Password required for {user}.",
    "user_again_other": "331 Password required for {user}.",
    "user_again_guest": "331 Password required for {user}.",
    "pass_first": "503 Login with USER first.",
    "pass_again": "503 Bad sequence of commands.",
    "login_ok": "230 User logged in.",
    "login_anon_ok": "230 User logged in.",
    "login_fail": "530 User cannot log in.",
    "login_needed": "530 Please login with USER and PASS.",
    "unknown": "500 Command not understood.",
    "denied": "550 Access is denied. ",
    "http": "500 Command not understood.",
    "too_long": "501 Syntax error in parameters or arguments.",
    "timeout": "421 Timeout ({seconds} seconds): closing control connection.",
    "syst": "215 Windows_NT",
    "noop": "200 NOOP command successful.",
    "quit": "221 Goodbye.",
    "pwd": '257 "{path}" is current directory.',
    "cwd_ok": "250 CWD command successful.",
    "cdup_ok": "250 CDUP command successful.",
    "cwd_fail": "550 The system cannot find the file specified. ",
    "type_i": "200 Type set to I.",
    "type_a": "200 Type set to A.",
    "type_bad": "504 Command not implemented for that parameter.",
    "mode_ok": "200 MODE S command successful.",
    "mode_bad": "504 Command not implemented for that parameter.",
    "stru_ok": "200 STRU F command successful.",
    "stru_bad": "504 Command not implemented for that parameter.",
    "rest": "350 Restarting at {offset}.",
    "abor_idle": "225 ABOR command successful.",
    "abor_broken": "426 Connection closed; transfer aborted.",
    "abor_broken_in": "426 Connection closed; transfer aborted.",
    "abor_ok": "226 ABOR command successful.",
    "pasv": "227 Entering Passive Mode ({address},{p1},{p2}).",
    "epsv": "229 Entering Extended Passive Mode (|||{port}|)",
    "epsv_all": "200 EPSV ALL command successful.",
    "epsv_bad": "522 Network protocol not supported, use ({family})",
    "epsv_all_only": "501 Server cannot accept argument.",
    "listen_fail": "425 Can't open data connection.",
    "port_ok": "200 PORT command successful.",
    "port_bad": "501 Server cannot accept argument.",
    "port_bounce": "501 Server cannot accept argument.",
    "eprt_ok": "200 EPRT command successful.",
    "eprt_bad": "501 Server cannot accept argument.",
    "eprt_proto": "522 Network protocol not supported, use ({family})",
    "eprt_bounce": "501 Server cannot accept argument.",
    "no_data": "425 Use PORT or PASV first.",
    "data_fail": "425 Can't open data connection.",
    "list_mark": "150 Opening {mode} mode data connection.",
    "list_done": "226 Transfer complete.",
    "retr_mark": "150 Opening {mode} mode data connection.",
    "retr_fail": "550 The system cannot find the file specified. ",
    "retr_ascii_rest": "550 The parameter is incorrect. ",
    "stor_mark": "150 Opening {mode} mode data connection.",
    "stou_mark": "150 Opening {mode} mode data connection for {name}.",
    "stor_fail": "550 Access is denied. ",
    "transfer_ok": "226 Transfer complete.",
    "dele_ok": "250 DELE command successful.",
    "dele_fail": "550 The system cannot find the file specified. ",
    "rnfr_ok": "350 Requested file action pending further information.",
    "rnfr_fail": "550 The system cannot find the file specified. ",
    "rnto_ok": "250 RNTO command successful.",
    "rnto_fail": "550 Cannot create a file when that file already exists. ",
    "rnto_first": "503 Bad sequence of commands.",
    "mkd_ok": '257 "{name}" directory created.',
    "mkd_fail": "550 Cannot create a file when that file already exists. ",
    "rmd_ok": "250 RMD command successful.",
    "rmd_fail": "550 The directory is not empty. ",
    "size_fail": "550 The system cannot find the file specified. ",
    "mdtm_fail": "550 The system cannot find the file specified. ",
    "opts_utf8": "200 OPTS UTF8 command successful - UTF8 encoding now ON.",
    "opts_bad": "501 Option not supported.",
    "acct": "202 Command not implemented, superfluous at this site.",
    "allo": "202 Command not implemented, superfluous at this site.",
    "rein": "502 Command not implemented.",
    "smnt": "502 Command not implemented.",
    "site_bad": "501 Syntax error in parameters or arguments.",
    "site_help": "214 The following SITE commands are recognized.",
    "auth_ok": "234 AUTH command ok. Expecting TLS Negotiation.",
    "auth_bad": "504 Security mechanism not implemented.",
    "pbsz": "200 PBSZ command successful.",
    "pbsz_plain": "503 Bad sequence of commands.",
    "prot_p": "200 PROT command successful.",
    "prot_c": "200 PROT command successful.",
    "prot_unsupported": "536 Requested PROT level not supported by mechanism.",
    "prot_bad": "504 Command not implemented for that parameter.",
    "prot_plain": "503 Bad sequence of commands.",
    "stat_file_head": "213-Status of {name}:",
    "stat_file_end": "213 End of status.",
    "syntax": "501 Syntax error in parameters or arguments.",
    "already_open": "125 Data connection already open; Transfer starting.",
    "stat_head": "211-Microsoft FTP Service status:",
    "stat_end": "211 End of status.",
    "mlst_head": "250-Listing {path}",
    "mlst_end": "250 End.",
    # PASV on an IPv6 control connection: no IPv4 address to give (EPSV works)
    "pasv_v6": "501 Server cannot accept argument.",
    "data_timeout": "426 Connection closed; transfer aborted.",
    "host_ok": "220 Host accepted.",
    "host_late": "503 Bad sequence of commands.",
    "lang_ok": "200 LANG command successful.",
    "lang_bad": "504 Command not implemented for that parameter.",
    "clnt": "200 CLNT command successful.",
    "ccc_plain": "503 Bad sequence of commands.",
    # the control channel policy requires SSL: it may not fall back to clear text
    "ccc_refused": "534 Policy requires SSL.",
}

_VSFTPD_HELP = (
    "214-The following commands are recognized.",
    " ABOR ACCT ALLO APPE CDUP CWD  DELE EPRT EPSV FEAT HELP LIST MDTM MKD",
    " MODE NLST NOOP OPTS PASS PASV PORT PWD  QUIT REIN REST RETR RMD  RNFR",
    " RNTO SITE SIZE SMNT STAT STOR STOU STRU SYST TYPE USER XCUP XCWD XMKD",
    " XPWD XRMD",
    "214 Help OK.",
)

_IIS_HELP_VERBS = (
    "ABOR", "ACCT", "ADAT *", "ALLO", "APPE", "AUTH", "CCC", "CDUP", "CONF *", "CWD",
    "DELE", "ENC *", "EPRT", "EPSV", "FEAT", "HELP", "HOST", "LANG", "LIST", "MDTM",
    "MIC *", "MKD", "MLSD", "MLST", "MODE", "NLST", "NOOP", "OPTS", "PASS", "PASV",
    "PBSZ", "PORT", "PROT", "PWD", "QUIT", "REIN", "REST", "RETR", "RMD", "RNFR",
    "RNTO", "SIZE", "SMNT", "STAT", "STOR", "STOU", "STRU", "SYST", "TYPE", "USER",
    "XCUP", "XCWD", "XMKD", "XPWD", "XRMD",
)
_IIS_HELP = (
    "214-The following commands are recognized (* ==>'s unimplemented).",
    *(f"    {verb}" for verb in _IIS_HELP_VERBS),
    "214 HELP command successful.",
)


@dataclass(frozen=True)
class Dialect:
    """One product's words and habits."""

    name: str  # "vsftpd" or "iis"
    product: str
    version: str
    texts: dict[str, str]
    help_lines: tuple[str, ...]
    #: FEAT body lines (without the 211 head and tail), TLS lines included only when offered
    features: tuple[str, ...]
    tls_features: tuple[str, ...]
    feat_head: str
    feat_tail: str
    #: Windows file names are case-insensitive
    case_insensitive: bool
    #: commands answered before login (everything else: login_needed)
    prelogin: frozenset[str]
    #: connection closed after this many failed logins (0: never)
    max_login_fails: int
    idle_timeout: float
    #: how long a data channel may stall (vsftpd data_connection_timeout, IIS
    #: dataChannelTimeout)
    data_timeout: float
    #: strip Telnet IAC sequences from command lines (vsftpd passes them through)
    telnet: bool
    #: connect an active data channel at PORT time (FTP 7.5) rather than at transfer time
    connect_on_port: bool
    #: MLSD/MLST answered (RFC 3659)
    mlsd: bool
    #: close the control connection after an overlong line
    close_on_long_line: bool
    #: refuse PORT/EPRT to privileged ports (vsftpd's port_promiscuous=NO)
    refuse_low_ports: bool
    #: TYPE A transfers convert line ends (IIS); vsftpd's ascii_upload_enable and
    #: ascii_download_enable default to NO: it says "ASCII" but moves bytes unchanged
    ascii_convert: bool = False
    #: PASV on an IPv6 control connection listens and announces 0,0,0,0 (vsftpd) rather
    #: than being refused with `pasv_v6` (IIS)
    pasv_on_ipv6: bool = True
    #: a data channel timeout ends the control connection too (vsftpd's data alarm)
    close_on_data_timeout: bool = False
    #: verbs only this product knows (IIS: HOST, LANG, CLNT, CCC)
    own_verbs: frozenset[str] = frozenset()
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self, key: str, **values: Any) -> bytes:
        text = self.texts[key]
        if values:
            text = text.format(**values)
        return (text + "\r\n").encode("utf-8", "surrogateescape")

    def lines(self, lines: tuple[str, ...] | list[str]) -> bytes:
        return "".join(f"{line}\r\n" for line in lines).encode("utf-8", "surrogateescape")

    def feat(self, tls: bool) -> bytes:
        body = self.features if not tls else self.tls_features
        return self.lines([self.feat_head, *body, self.feat_tail])


def vsftpd(version: str = "3.0.3") -> Dialect:
    texts = {k: v.replace("{version}", version) for k, v in _VSFTPD.items()}
    return Dialect(
        name="vsftpd", product="vsftpd", version=version, texts=texts,
        help_lines=_VSFTPD_HELP,
        features=(" EPRT", " EPSV", " MDTM", " PASV", " REST STREAM", " SIZE", " TVFS",
                  " UTF8"),
        tls_features=(" AUTH TLS", " EPRT", " EPSV", " MDTM", " PASV", " PBSZ", " PROT",
                      " REST STREAM", " SIZE", " TVFS", " UTF8"),
        feat_head="211-Features:", feat_tail="211 End",
        case_insensitive=False,
        prelogin=frozenset({"USER", "PASS", "QUIT", "FEAT", "OPTS", "AUTH", "PBSZ", "PROT"}),
        max_login_fails=3, idle_timeout=300.0, data_timeout=300.0, telnet=False,
        connect_on_port=False,
        mlsd=False, close_on_long_line=True, refuse_low_ports=True,
        ascii_convert=False, pasv_on_ipv6=True, close_on_data_timeout=True,
    )


def iis(version: str = "7.5") -> Dialect:
    return Dialect(
        name="iis", product="Microsoft FTP Service", version=version, texts=dict(_IIS),
        help_lines=_IIS_HELP,
        features=(" LANG EN*", " UTF8", " HOST", " SIZE", " MDTM", " REST STREAM"),
        tls_features=(" LANG EN*", " UTF8", " AUTH TLS;TLS-C;SSL;TLS-P;", " PBSZ",
                      " PROT C;P;", " CCC", " HOST", " SIZE", " MDTM", " REST STREAM"),
        feat_head="211-Extended features supported:", feat_tail="211 END",
        case_insensitive=True,
        prelogin=frozenset({"USER", "PASS", "QUIT", "FEAT", "OPTS", "AUTH", "PBSZ", "PROT",
                            "SYST", "HELP", "NOOP", "HOST", "LANG", "CLNT", "CCC"}),
        max_login_fails=0, idle_timeout=120.0, data_timeout=30.0, telnet=True,
        connect_on_port=True,
        mlsd=True, close_on_long_line=False, refuse_low_ports=False,
        ascii_convert=True, pasv_on_ipv6=False, close_on_data_timeout=False,
        own_verbs=frozenset({"HOST", "LANG", "CLNT", "CCC"}),
    )


def for_product(product: dict[str, Any]) -> Dialect:
    """The dialect a persona's `products.ftp` entry names."""
    name = str(product.get("dialect") or product.get("product") or "").lower()
    version = str(product.get("version") or "")
    if "vsftpd" in name:
        return vsftpd(version or "3.0.3")
    return iis(version or "7.5")
