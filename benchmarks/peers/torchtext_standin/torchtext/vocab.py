"""A dictionary-backed ``Vocab`` with the method names of ``torchtext.vocab.Vocab``."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable


class _TokenTable:
    """Ordered token table; plays the role of torchtext's compiled ``VocabPybind`` object."""

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        self.itos: list[str] = []
        self.stoi: dict[str, int] = {}
        self.default_index: int | None = None
        for token in tokens:
            self.append(token)

    def append(self, token: str) -> None:
        if token in self.stoi:
            raise RuntimeError(f"token {token!r} already exists in the vocabulary")
        self.stoi[token] = len(self.itos)
        self.itos.append(token)

    def insert(self, token: str, index: int) -> None:
        if token in self.stoi:
            raise RuntimeError(f"token {token!r} already exists in the vocabulary")
        if not 0 <= index <= len(self.itos):
            raise RuntimeError(f"index {index} is outside 0..{len(self.itos)}")
        if index == len(self.itos):
            self.append(token)
            return
        self.itos.insert(index, token)
        self.stoi = {tok: i for i, tok in enumerate(self.itos)}


class Vocab:
    """Token <-> index mapping with an optional default index for unknown tokens."""

    def __init__(self, vocab: _TokenTable) -> None:
        self.vocab = vocab

    def __len__(self) -> int:
        return len(self.vocab.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.vocab.stoi

    def __getitem__(self, token: str) -> int:
        index = self.vocab.stoi.get(token)
        if index is not None:
            return index
        if self.vocab.default_index is None:
            raise RuntimeError(f"token {token!r} not found and no default index is set")
        return self.vocab.default_index

    def __call__(self, tokens: list[str]) -> list[int]:
        return self.lookup_indices(tokens)

    def forward(self, tokens: list[str]) -> list[int]:
        return self.lookup_indices(tokens)

    def set_default_index(self, index: int | None) -> None:
        self.vocab.default_index = index

    def get_default_index(self) -> int | None:
        return self.vocab.default_index

    def insert_token(self, token: str, index: int) -> None:
        self.vocab.insert(token, index)

    def append_token(self, token: str) -> None:
        self.vocab.append(token)

    def lookup_token(self, index: int) -> str:
        if not 0 <= index < len(self.vocab.itos):
            raise RuntimeError(f"index {index} is outside the vocabulary of {len(self)} tokens")
        return self.vocab.itos[index]

    def lookup_tokens(self, indices: list[int]) -> list[str]:
        return [self.lookup_token(i) for i in indices]

    def lookup_indices(self, tokens: list[str]) -> list[int]:
        return [self[token] for token in tokens]

    def get_stoi(self) -> dict[str, int]:
        return dict(self.vocab.stoi)

    def get_itos(self) -> list[str]:
        return list(self.vocab.itos)


def vocab(ordered_dict: OrderedDict, min_freq: int = 1, specials: list[str] | None = None, special_first: bool = True):
    """Build a :class:`Vocab` from token -> frequency, keeping tokens seen at least ``min_freq`` times."""
    specials = list(specials or [])
    tokens = [token for token, freq in ordered_dict.items() if freq >= min_freq and token not in specials]
    tokens = specials + tokens if special_first else tokens + specials
    return Vocab(_TokenTable(tokens))


def build_vocab_from_iterator(iterator: Iterable[Iterable[str]], min_freq: int = 1, specials=None, special_first=True):
    """Count tokens over an iterator of token lists and build a vocabulary (most frequent first)."""
    counts: dict[str, int] = {}
    for tokens in iterator:
        for token in tokens:
            counts[token] = counts.get(token, 0) + 1
    ordered = OrderedDict(sorted(sorted(counts.items()), key=lambda item: item[1], reverse=True))
    return vocab(ordered, min_freq=min_freq, specials=specials, special_first=special_first)
