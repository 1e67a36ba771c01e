"""The two OpenSSL context settings the ssl module cannot make: TLS 1.3 suites and groups.

A product's TLS 1.3 suite order and its key-exchange groups show in every
handshake (`openssl s_client` prints the suite; scanners list the groups), so a
profile that differs from OpenSSL's defaults needs them set on the very
SSL_CTX the ssl module made. They are set through the libssl the ssl module
itself is linked to. If anything here does not line up (another Python, another
layout), nothing is changed and the context keeps OpenSSL's defaults.
"""

from __future__ import annotations

import ctypes
import logging
import ssl
import sys
from collections.abc import Callable
from functools import cache

log = logging.getLogger(__name__)

_SSL_CTRL_SET_GROUPS_LIST = 92


@cache
def _lib() -> ctypes.CDLL | None:
    # the context object's layout (its SSL_CTX pointer right after the object header)
    # is that of these CPython versions; any other gets OpenSSL's defaults
    if sys.implementation.name != "cpython" or not (3, 8) <= sys.version_info[:2] <= (3, 13):
        return None
    try:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)
        lib.SSL_CTX_get_options.restype = ctypes.c_uint64
        lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_set_ciphersuites.restype = ctypes.c_int
        lib.SSL_CTX_set_ciphersuites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.SSL_CTX_ctrl.restype = ctypes.c_long
        lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long,
                                     ctypes.c_void_p]
        return lib
    except (OSError, AttributeError, ImportError):
        return None


def _handle(ctx: ssl.SSLContext) -> tuple[ctypes.CDLL, int] | None:
    """(libssl, SSL_CTX*) if the context's C pointer can be found and checked."""
    lib = _lib()
    if lib is None:
        return None
    # CPython's context object is PyObject_HEAD followed by its SSL_CTX pointer
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ptr or lib.SSL_CTX_get_options(ptr) != int(ctx.options):
        return None
    return lib, ptr


def _apply(ctx: ssl.SSLContext, what: str, call: Callable[[ctypes.CDLL, int], int]) -> bool:
    found = _handle(ctx)
    if found is None:
        log.warning("%s left at the library's defaults", what)
        return False
    lib, ptr = found
    if call(lib, ptr) != 1:
        log.warning("%s refused by OpenSSL: left at the library's defaults", what)
        return False
    return True


def set_ciphersuites(ctx: ssl.SSLContext, suites: str | list[str]) -> bool:
    """Set the TLS 1.3 suites, in order; False (context unchanged) if not possible."""
    text = suites if isinstance(suites, str) else ":".join(suites)
    return _apply(ctx, "TLS 1.3 suites",
                  lambda lib, ptr: lib.SSL_CTX_set_ciphersuites(ptr, text.encode()))


def set_groups(ctx: ssl.SSLContext, groups: str | list[str]) -> bool:
    """Set the key-exchange groups, in order; False (context unchanged) if not possible."""
    text = groups if isinstance(groups, str) else ":".join(groups)
    buf = ctypes.create_string_buffer(text.encode())
    arg = ctypes.cast(buf, ctypes.c_void_p)
    return _apply(ctx, "TLS groups",
                  lambda lib, ptr: lib.SSL_CTX_ctrl(ptr, _SSL_CTRL_SET_GROUPS_LIST, 0, arg))
