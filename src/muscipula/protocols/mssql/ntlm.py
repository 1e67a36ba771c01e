"""NTLM inside LOGIN7/SSPI: the shared server side (protocols/ntlm.py), under its old name."""

from __future__ import annotations

from muscipula.protocols.ntlm import (
    FLAGS,
    SIGNATURE,
    Names,
    challenge_message,
    is_negotiate,
    parse_authenticate,
)

__all__ = ["FLAGS", "SIGNATURE", "Names", "challenge_message", "is_negotiate",
           "parse_authenticate"]
