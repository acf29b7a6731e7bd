"""A reply as it is generated, token by token: its text so far, where it stops, and the part that is safe to stream.

Streamed deltas always concatenate to the final reply: text that may still change is held back (an incomplete UTF-8
character, whitespace a stripped reply may lose at its end, a possible beginning of a stop string)."""

from __future__ import annotations

from dataclasses import dataclass

from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from lightning_ft.serve.jobs import GenerationJob

INCOMPLETE_CHARACTER = "\ufffd"  # what decoding shows for the first bytes of a character split across tokens


@dataclass
class ReplyUpdate:
    """What one generation step adds to one reply: new text, and once it ends, why and how many tokens it used."""

    content: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ReplyText:
    """The reply to one job. ``completion_tokens`` counts every token generated for it: the end-of-turn token that
    ended it, or the token that completed a stop string, included.

    Args:
        job: The job replied to (stop strings, length limit, stripping).
        tokenizer: Decodes the reply's tokens (special tokens skipped).
        stop_ids: Token ids that end the reply.
    """

    def __init__(self, job: GenerationJob, tokenizer: PreTrainedTokenizerBase, stop_ids: tuple[int, ...]) -> None:
        self.job = job
        self.tokenizer = tokenizer
        self.stop_ids = set(stop_ids)
        self.token_ids: list[int] = []
        self.completion_tokens = 0
        self.sent = 0  # characters of the final text already handed out
        self.finish_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def add(self, token_id: int) -> ReplyUpdate:
        """Take the next generated token; the update says what became safe to send and whether the reply ended."""
        self.completion_tokens += 1
        if token_id in self.stop_ids:
            return self.finish("stop")
        self.token_ids.append(token_id)
        text = self._visible_text()
        if self._stop_position(text) is not None:
            return self.finish("stop")
        if self.completion_tokens >= self.job.sampling.max_new_tokens:
            return self.finish("length")
        return self._send(text[: self._safe_length(text)])

    def finish(self, reason: str) -> ReplyUpdate:
        """End the reply (``stop`` or ``length``) and send the rest of its final text."""
        self.finish_reason = reason
        update = self._send(self.text())
        update.finish_reason = reason
        update.prompt_tokens = len(self.job.prompt_ids)
        update.completion_tokens = self.completion_tokens
        return update

    def text(self) -> str:
        """The reply as it stands: cut before the first stop string, stripped for chat turns."""
        text = self._visible_text()
        position = self._stop_position(text)
        if position is not None:
            text = text[:position]
        return text.rstrip() if self.job.strip else text

    def _visible_text(self) -> str:
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        return text.lstrip() if self.job.strip else text

    def _stop_position(self, text: str) -> int | None:
        positions = [position for stop in self.job.stop if (position := text.find(stop)) >= 0]
        return min(positions) if positions else None

    def _safe_length(self, text: str) -> int:
        """How much of ``text`` no later token can change."""
        safe = len(text)
        while safe and text[safe - 1] == INCOMPLETE_CHARACTER:
            safe -= 1
        for stop in self.job.stop:  # the longest end of the text that may begin a stop string
            for length in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:length]):
                    safe = min(safe, len(text) - length)
                    break
        return len(text[:safe].rstrip()) if self.job.strip else safe

    def _send(self, text: str) -> ReplyUpdate:
        delta = text[self.sent :] if len(text) > self.sent else ""
        self.sent = max(self.sent, len(text))
        return ReplyUpdate(content=delta)
