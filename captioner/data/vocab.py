"""Words <-> integer ids for the decoder.

Tokenisation is a single regular expression, so it needs no downloaded data (no nltk punkt) and gives
the same tokens on every machine; the vocabulary is built in a fixed order, so the same captions always
give the same ids and a checkpoint's embedding rows keep their meaning.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any, Iterable, Sequence

from .records import read_json
from ..errors import ConfigError, DataError
from ..atomic import write_json

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
#: The special tokens, always at ids 0, 1, 2, 3 so padding is 0 and every vocabulary agrees on them.
SPECIALS = (PAD, START, END, UNK)

# A word is a run of letters/digits, possibly joined by apostrophes or hyphens inside it
# ("don't", "t-shirt", "3-year-old"); everything else (punctuation, spaces) separates words.
_WORD = re.compile(r"[^\W_]+(?:['-][^\W_]+)*")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u2010": "-", "\u2011": "-"})


def tokenize(text: str) -> list[str]:
    """Lower-case words of ``text``, punctuation dropped: ``"A dog's t-shirt, 2."`` -> ``["a", "dog's", "t-shirt", "2"]``."""
    return _WORD.findall(text.lower().translate(_APOSTROPHES))


def detokenize(tokens: Sequence[str]) -> str:
    """Join tokens with single spaces, the form the caption metrics compare."""
    return " ".join(tokens)


class Vocab:
    """An ordered word list: ``itos[i]`` is the word for id ``i``, ``stoi`` the reverse map."""

    def __init__(self, itos: Sequence[str]) -> None:
        self.itos: list[str] = list(itos)
        self.stoi: dict[str, int] = {word: i for i, word in enumerate(self.itos)}

    # ----------------------------------------------------------------------------- building
    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 5, max_size: int | None = None) -> Vocab:
        """Keep words seen at least ``min_count`` times, most frequent first (ties alphabetical).

        ``max_size`` caps ``len(vocab)``, the four special tokens included, by dropping the rarest words.
        """
        if min_count < 1:
            raise ConfigError(f"minimum word count must be at least 1, got {min_count}")
        if max_size is not None and max_size <= len(SPECIALS):
            raise ConfigError(
                f"maximum vocabulary size must be more than {len(SPECIALS)} (the special tokens), got {max_size}"
            )
        counts: Counter[str] = Counter()
        n_captions = 0
        for caption in captions:
            counts.update(tokenize(caption))
            n_captions += 1
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if not words:
            raise DataError(
                f"empty vocabulary: no word occurs at least {min_count} times in {n_captions} captions; "
                "lower --min-word-count"
            )
        if max_size is not None:
            words = words[: max_size - len(SPECIALS)]
        return cls([*SPECIALS, *words])

    # ----------------------------------------------------------------------------- ids
    @property
    def pad_id(self) -> int:
        return 0

    @property
    def start_id(self) -> int:
        return 1

    @property
    def end_id(self) -> int:
        return 2

    @property
    def unk_id(self) -> int:
        return 3

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: object) -> bool:
        return word in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens)"

    def encode(self, text_or_tokens: str | Sequence[str], max_len: int | None = None) -> list[int]:
        """``[START] + word ids + [END]``; unknown words become UNK; at most ``max_len`` words are kept.

        A string is tokenised with :func:`tokenize`; a list of tokens is used as given.
        """
        tokens = tokenize(text_or_tokens) if isinstance(text_or_tokens, str) else list(text_or_tokens)
        if max_len is not None:
            if max_len < 0:
                raise ValueError(f"max_len must be >= 0, got {max_len}")
            tokens = tokens[:max_len]
        unk = self.unk_id
        return [self.start_id, *(self.stoi.get(t, unk) for t in tokens), self.end_id]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words for ``ids`` up to the first END, without PAD/START/END (UNK stays as ``"<unk>"``).

        Accepts plain ints or anything ``int()`` understands (tensor / numpy elements).
        """
        words: list[str] = []
        n = len(self.itos)
        for raw in ids:
            i = int(raw)
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            if not 0 <= i < n:
                raise ValueError(f"token id {i} is outside the vocabulary of {n} tokens")
            words.append(self.itos[i])
        return words

    # ----------------------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, stored in checkpoints and vocabulary files."""
        return {"itos": list(self.itos)}

    @classmethod
    def from_dict(cls, d: Any, source: str = "vocabulary") -> Vocab:
        """Rebuild from :meth:`to_dict` output, checking its shape; ``source`` names it in errors."""
        where = f"{source}: not a vocabulary"
        if not isinstance(d, dict) or "itos" not in d:
            raise DataError(f"{where}: expected an object with key 'itos'")
        itos = d["itos"]
        if not isinstance(itos, list) or not all(isinstance(w, str) for w in itos):
            raise DataError(f"{where}: 'itos' must be a list of strings")
        if tuple(itos[: len(SPECIALS)]) != SPECIALS:
            raise DataError(f"{where}: 'itos' must start with {', '.join(SPECIALS)}")
        if len(set(itos)) != len(itos):
            dup = next(w for w, c in Counter(itos).items() if c > 1)
            raise DataError(f"{where}: word {dup!r} appears more than once in 'itos'")
        return cls(itos)

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON, atomically."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        """Read a file written by :meth:`save`; DataError (naming the file) if missing or malformed."""
        return cls.from_dict(read_json(path), source=str(path))
