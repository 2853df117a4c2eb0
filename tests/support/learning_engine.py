"""A deterministic engine that gets better with demos, for the optimization tests.

Like the real small model (issue 10: demos "mostly fix the format"), it knows every answer but
writes it as a sentence unless the prompt shows it examples: asked `question: What is 3 plus
4?` it computes 7, and answers ` 7` or ` The answer is 7.`. Each question needs a number of
demos in the prompt (0 to `DEMOS_FOR_ALL`, from a hash of the question) before it answers
short, so zero demos score 0 on exact match, `DEMOS_FOR_ALL` demos score 1, and the counts in
between score in between: every optimizer's candidates differ, and a dev score can rise.

Requests for any other field (MIPROv2's instruction proposals, used as its prompt model) get
`PROPOSAL`. Loaded by dotted path like an operator's custom engine (`LEARNING_ENGINE`).
"""

import re
import zlib

from providers.engines import request_messages
from tests.support.engines import DeterministicEngine

LEARNING_ENGINE = "tests.support.learning_engine.LearningEngine"
DEMOS_FOR_ALL = 4
PROPOSAL = " Answer with the number only."
QUESTION = re.compile(r"question: What is (\d+) plus (\d+)\?")


def demos_needed(question: str) -> int:
    """How many demos the prompt must carry before this question is answered short (0-4)."""
    return zlib.crc32(question.encode()) % (DEMOS_FOR_ALL + 1)


def sum_question(a: int, b: int) -> str:
    return f"What is {a} plus {b}?"


class LearningEngine(DeterministicEngine):
    def reply(self, request) -> str:
        messages, prefix = request_messages(request)
        if not prefix.endswith("answer:"):
            return PROPOSAL
        # The compact adapter writes each demo as a user turn and its answer, then the question.
        users = [m["content"] for m in messages if m["role"] == "user"]
        found = QUESTION.search(users[-1]) if users else None
        if found is None:
            return " I do not know."
        answer = int(found.group(1)) + int(found.group(2))
        question = sum_question(int(found.group(1)), int(found.group(2)))
        if len(users) - 1 >= demos_needed(question):
            return f" {answer}"
        return f" The answer is {answer}."
