"""Who gets in: accept everyone, a configured list, or refuse an address's first N tries."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable


class LoginPolicy:
    """Shared by every connection of the service (the refuse-first counts span them)."""

    def __init__(self, mode: str, users: dict[str, str], refuse_first: int,
                 max_addresses: int = 65536) -> None:
        self.mode = mode
        self.users = users
        self.refuse_first = refuse_first
        self.max_addresses = max_addresses
        self.tries: OrderedDict[str, int] = OrderedDict()

    def decide(self, user: str, address: str, password: str | None,
               proof_matches: Callable[[str], bool]) -> bool:
        """`password` when known in plaintext; else `proof_matches(candidate)` checks a guess."""
        if self.mode == "list":
            if user not in self.users:
                return False
            expected = self.users[user]
            return password == expected if password is not None else proof_matches(expected)
        if self.mode == "refuse_first":
            n = self.tries.pop(address, 0)
            self.tries[address] = n + 1
            while len(self.tries) > self.max_addresses:
                self.tries.popitem(last=False)
            return n >= self.refuse_first
        return True
