"""Which extensions exist and which digest logins succeed.

A digest answer hides the password: a login can only be checked against the
configured password of its extension (`list`), let in after an address's first
N tries whatever it sent (`refuse_first`), or never (`never`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable


class LoginPolicy:
    """Shared by every session of the service; the per-address tally is bounded."""

    def __init__(self, mode: str, accounts: dict[str, str], extensions: set[str],
                 refuse_first: int, max_addresses: int = 65536) -> None:
        self.mode = mode
        self.accounts = accounts
        self.extensions = extensions | set(accounts)
        self.refuse_first = refuse_first
        self.max_addresses = max_addresses
        self.tries: OrderedDict[str, int] = OrderedDict()

    def exists(self, user: str) -> bool:
        return user in self.extensions

    def decide(self, user: str, address: str, proof_matches: Callable[[str], bool]) -> bool:
        if self.mode == "never" or not self.exists(user):
            return False
        if self.mode == "list":
            password = self.accounts.get(user)
            return password is not None and proof_matches(password)
        n = self.tries.pop(address, 0)
        self.tries[address] = n + 1
        while len(self.tries) > self.max_addresses:
            self.tries.popitem(last=False)
        return n >= self.refuse_first
