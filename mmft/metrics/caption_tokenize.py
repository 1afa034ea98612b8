"""A Java-free stand-in for the COCO caption evaluation's tokenization (PTB tokenizer + punctuation removal).

pycocoevalcap runs the Stanford PTB tokenizer (Java) with lowercasing, then deletes punctuation tokens. This
module approximates that in pure Python so the caption metrics need no JVM:

* lowercase; curly quotes become straight ones;
* split clitics the way PTB does: ``don't`` -> ``do n't``, ``can't`` -> ``ca n't``, ``dog's`` -> ``dog 's``,
  ``they're`` -> ``they 're``; ``cannot`` -> ``can not``;
* keep words whole across inner hyphens, slashes, ampersands and apostrophes (``t-shirt``, ``and/or``,
  ``o'clock``) and numbers across inner periods and commas (``3.5``, ``1,000``);
* every other symbol is its own token, and the ones pycocoevalcap deletes (``. , ? ! : ; -`` and quotes) are
  dropped. Brackets are dropped too (PTB writes them as ``-LRB-`` etc., which pycocoevalcap deletes for round and
  curly ones); symbols such as ``& $ % # +`` stay as tokens, as in PTB output.

Text that is already tokenized this way (lowercase, single spaces, clitics split) comes back unchanged, so the
metrics equal pycocoevalcap's on pre-tokenized text; on raw text they differ only where this approximation and the
PTB tokenizer disagree (abbreviations such as ``u.s.``, rare contractions like ``gonna``, unusual symbols).
"""

from __future__ import annotations

import re

__all__ = ["tokenize_caption"]

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})
_NOT_CLITIC = re.compile(r"(?<=[^\W_])n't\b")  # "don't" -> "do n't"; "can't" -> "ca n't", as PTB splits it
_OTHER_CLITIC = re.compile(r"(?<=[^\W_])'(s|re|ve|ll|m|d)\b")  # "dog's" -> "dog 's"
_CANNOT = re.compile(r"\bcannot\b")
# Alternatives in priority order: a split-off clitic, a word (letters/digits joined by - / & ' or by . , between
# digits), then any single other non-space character.
_TOKEN = re.compile(
    r"n't\b|'(?:s|re|ve|ll|m|d)\b"
    r"|[^\W_]+(?:[-/&'][^\W_]+|(?<=\d)[.,]\d+)*"
    r"|\S"
)
_DROPPED = frozenset(".,?!:;-'\"`()[]{}\u2026")  # \u2026 is the one-character ellipsis


def tokenize_caption(text: str) -> str:
    """Lowercased caption tokens joined by single spaces, punctuation removed (see the module docstring)."""
    text = text.lower().translate(_QUOTES)
    text = _CANNOT.sub("can not", text)
    text = _NOT_CLITIC.sub(" n't", text)
    text = _OTHER_CLITIC.sub(r" '\1", text)
    return " ".join(token for token in _TOKEN.findall(text) if token not in _DROPPED)
