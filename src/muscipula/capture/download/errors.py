"""Why a fetch did not happen: one exception carrying the reason recorded in download.failed."""

from __future__ import annotations


class FetchError(Exception):
    """`reason` is a short fixed word (see the package docstring); `detail` says more."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
