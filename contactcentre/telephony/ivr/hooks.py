"""Helpers for self-service hooks that stay on the pure side (no store access here).

Case tokens such as ``C-7QK2ZP`` hold letters; a caller types them on a telephone keypad, so a caller's
``775297`` is every token whose letters sit on those keys. The store-backed ``case_status`` hook matches the
keypad form of its tokens (narrowed to the caller's own cases by ANI: 32 symbols share 8 keys, so the digits
alone are ambiguous in a large store).
"""

from __future__ import annotations

_KEYPAD = {
    **{str(d): str(d) for d in range(10)},
    **{
        ch: key
        for key, letters in {
            "2": "ABC",
            "3": "DEF",
            "4": "GHI",
            "5": "JKL",
            "6": "MNO",
            "7": "PQRS",
            "8": "TUV",
            "9": "WXYZ",
        }.items()
        for ch in letters
    },
}


def keypad_digits(token: str) -> str:
    """``"C-7QK2ZP"`` → ``"775297"``: what a caller presses for a case token (the ``C-`` prefix is implied)."""
    body = token.upper().removeprefix("C-")
    return "".join(_KEYPAD[ch] for ch in body if ch in _KEYPAD)
