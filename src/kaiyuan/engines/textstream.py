"""Turns a stream of token bytes into text deltas, cut at stop strings.

Shared by all backends: bytes are decoded incrementally (a multi-byte character split across
tokens is emitted once complete), and any tail that could still grow into a stop string is
held back, so stop text is never emitted.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

from kaiyuan.engines.base import Delta, TokenLogprob


@dataclass(slots=True)
class TextStream:
    stop: tuple[str, ...] = ()
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    _pending: str = ""
    # (offset in _pending where the token's text starts, its logprob)
    _pending_lp: list[tuple[int, TokenLogprob]] = field(default_factory=list)
    stopped: bool = False
    matched: str | None = None  # the stop string that ended the text

    def push(self, piece: bytes, logprob: TokenLogprob | None = None) -> Delta | None:
        """Feed one token; returns what may be emitted now. Sets ``stopped`` on a match."""
        if self.stopped:
            return None
        start = len(self._pending)
        self._pending += self._decoder.decode(piece)
        if logprob is not None:
            self._pending_lp.append((start, logprob))
        cut = self._find_stop()
        if cut is not None:
            self.stopped = True
            return self._emit(cut, keep=False)
        return self._emit(len(self._pending) - self._held_back())

    def flush(self) -> Delta | None:
        """Everything still held (the generation ended without a stop match)."""
        if self.stopped:
            return None
        self._pending += self._decoder.decode(b"", final=True)
        return self._emit(len(self._pending))

    def _find_stop(self) -> int | None:
        hits = [(i, s) for s in self.stop if (i := self._pending.find(s)) >= 0]
        if not hits:
            return None
        at, self.matched = min(hits)
        return at

    def _held_back(self) -> int:
        """Length of the longest tail of pending text that is a proper prefix of a stop."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(s[:n]):
                    best = n
                    break
        return best

    def _emit(self, upto: int, *, keep: bool = True) -> Delta | None:
        # A token's logprob goes out with the first character of its text; a token whose bytes
        # are still an incomplete character waits for the next one.
        text = self._pending[:upto]
        lps = [lp for start, lp in self._pending_lp if start < upto]
        if keep:
            self._pending = self._pending[upto:]
            self._pending_lp = [(s - upto, lp) for s, lp in self._pending_lp if s >= upto]
        else:
            self._pending, self._pending_lp = "", []
        if not text and not lps:
            return None
        return Delta(text=text, logprobs=lps)
