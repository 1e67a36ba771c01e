"""Answers to repeated identical requests, reused for the second their Date names.

Scanners and floods send the same request head again and again. A bodiless
request's answer and its record depend only on its head bytes, the scheme and
local port and the second (the Date header), so the first one is built in full
and the rest reuse its actions. Only answers that are a plain reply and an
`http.request` record are kept: anything that found an exploit, a login or an
upload always takes the full path, and so does every request in a new second.
"""

from __future__ import annotations

from dataclasses import dataclass

from muscipula.machine import Action


@dataclass(slots=True)
class Answer:
    second: int
    #: Send(reply), Emit("http.request"), and Close when the reply closes
    actions: list[Action]
    close: bool
    #: the reply kept the connection open only because the per-connection request
    #: budget was not used up: a hit must check the budget again
    budgeted: bool


class AnswerCache:
    """A bounded map of head bytes to the answer built for them, oldest out first."""

    __slots__ = ("answers", "entries", "max_head", "max_reply")

    def __init__(self, entries: int, max_head: int, max_reply: int) -> None:
        self.answers: dict[bytes, Answer] = {}
        self.entries = entries
        self.max_head = max_head
        self.max_reply = max_reply

    def get(self, head: bytes, second: int) -> Answer | None:
        answer = self.answers.get(head)
        if answer is None or answer.second != second:
            return None
        return answer

    def put(self, head: bytes, answer: Answer, reply_size: int) -> None:
        if not self.entries or len(head) > self.max_head or reply_size > self.max_reply:
            return
        answers = self.answers
        if head not in answers and len(answers) >= self.entries:
            del answers[next(iter(answers))]
        answers[head] = answer

    def __len__(self) -> int:
        return len(self.answers)
