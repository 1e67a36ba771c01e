"""Which FTP logins succeed: everything, a list, anonymous only, or all after N refusals.

Refusing the first tries of an address and then letting it in harvests more
passwords from a brute-forcer while still showing it a server that works.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

ANONYMOUS = frozenset({"anonymous", "ftp"})


def is_anonymous(user: str) -> bool:
    return user.lower() in ANONYMOUS


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    password: str


class LoginPolicy:
    """Shared by every session of the service; the per-address tally is bounded."""

    def __init__(self, mode: str, accounts: list[Account], anonymous: bool, refuse_first: int,
                 max_addresses: int = 65536) -> None:
        self.mode = mode
        self.accounts = {(a.username, a.password) for a in accounts}
        self.anonymous = anonymous
        self.refuse_first = refuse_first
        self.max_addresses = max_addresses
        self.tries: OrderedDict[str, int] = OrderedDict()

    def anonymous_only(self) -> bool:
        return self.mode == "anonymous"

    def check(self, address: str, user: str, password: str) -> bool:
        """Decide one attempt (and count it for refuse_first)."""
        anon = is_anonymous(user)
        if anon:
            if self.mode == "anonymous":
                return True
            if self.mode == "refuse_first":
                return self._count(address) and self.anonymous
            return self.anonymous
        if self.mode == "anonymous":
            return False
        if self.mode == "list":
            return (user, password) in self.accounts
        if not password:
            return False  # no real server takes an empty password for a named account
        if self.mode == "refuse_first":
            return self._count(address)
        return True

    def _count(self, address: str) -> bool:
        n = self.tries.pop(address, 0) + 1
        self.tries[address] = n
        while len(self.tries) > self.max_addresses:
            self.tries.popitem(last=False)
        return n > self.refuse_first
