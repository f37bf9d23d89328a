"""Gene vocabulary: a token <-> id mapping of special tokens and gene symbols."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<cls>", "<eoc>", "<mask>")
VOCAB_FILENAME = "vocab.json"

_SPECIAL_PATTERN = re.compile(r"^<.*>$")
_REQUIRED_SPECIALS = ("<pad>", "<cls>")


def _examples(items: Iterable[object], n: int = 5) -> str:
    items = list(items)
    shown = ", ".join(repr(x) for x in items[:n])
    return shown + (", ..." if len(items) > n else "")


def _duplicates(items: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    dups: dict[str, None] = {}
    for item in items:
        if item in seen:
            dups[item] = None
        seen.add(item)
    return list(dups)


def _is_special(token: str) -> bool:
    return _SPECIAL_PATTERN.match(token) is not None


def _resolve_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path / VOCAB_FILENAME if path.is_dir() else path


class GeneVocab:
    """Token <-> id mapping: special tokens + gene symbols.

    Every token of the form ``<...>`` is a special token; all other tokens are genes.
    ``"<pad>"`` and ``"<cls>"`` are required, ``"<eoc>"`` and ``"<mask>"`` are optional.

    Parameters
    ----------
    genes
        Gene symbols. They get ids ``len(specials), len(specials) + 1, ...`` in the given order.
    specials
        Special tokens. They get ids ``0 .. len(specials) - 1`` in the given order.

    Raises
    ------
    ValueError
        If a gene name is empty, missing or not a string, if genes or specials are duplicated,
        if a gene looks like a special token (``<...>``), or if a required special token is missing.

    Examples
    --------
    >>> vocab = GeneVocab(["ACTB", "GAPDH"])
    >>> vocab["ACTB"], vocab.pad_id, len(vocab)
    (4, 0, 6)
    """

    def __init__(self, genes: Sequence[str], *, specials: Sequence[str] = SPECIAL_TOKENS) -> None:
        genes = list(genes)
        specials = list(specials)
        bad = [g for g in genes if not isinstance(g, str) or not g]
        if bad:
            raise ValueError(f"gene names must be non-empty strings; got {len(bad)} invalid (e.g. {_examples(bad)})")
        bad_specials = [s for s in specials if not isinstance(s, str) or not _is_special(s)]
        if bad_specials:
            raise ValueError(f"special tokens must look like '<name>'; got {_examples(bad_specials)}")
        dup_specials = _duplicates(specials)
        if dup_specials:
            raise ValueError(f"duplicate special tokens: {_examples(dup_specials)}")
        clash = [g for g in genes if g in set(specials)]
        if clash:
            raise ValueError(f"gene names equal to special tokens: {_examples(clash)}")
        reserved = [g for g in genes if _is_special(g)]
        if reserved:
            raise ValueError(f"gene names of the form '<...>' are reserved for special tokens: {_examples(reserved)}")
        dup_genes = _duplicates(genes)
        if dup_genes:
            raise ValueError(f"{len(dup_genes)} gene names occur more than once: {_examples(dup_genes)}")
        self._init_tokens(specials + genes)

    def _init_tokens(self, tokens: list[str]) -> None:
        missing = [s for s in _REQUIRED_SPECIALS if s not in tokens]
        if missing:
            raise ValueError(f"the vocabulary lacks required special tokens: {_examples(missing)}")
        self._tokens: list[str] = tokens
        self._ids: dict[str, int] = {t: i for i, t in enumerate(tokens)}
        self._gene_ids: dict[str, int] = {t: i for i, t in enumerate(tokens) if not _is_special(t)}
        self._upper_ids: dict[str, int] | None = None

    @classmethod
    def from_dict(cls, token_to_id: Mapping[str, int]) -> GeneVocab:
        """Build a vocabulary from an arbitrary ``{token: id}`` mapping (e.g. scGPT's ``vocab.json``).

        Parameters
        ----------
        token_to_id
            Mapping whose ids are exactly ``0 .. n - 1``. Tokens of the form ``<...>`` are special.

        Raises
        ------
        ValueError
            If tokens are not non-empty strings, ids are not integers forming ``0 .. n - 1`` without repeats,
            or ``"<pad>"`` / ``"<cls>"`` is missing.
        """
        if not isinstance(token_to_id, Mapping):
            raise ValueError(f"expected a mapping of token -> id, got {type(token_to_id).__name__}")
        bad_tokens = [t for t in token_to_id if not isinstance(t, str) or not t]
        if bad_tokens:
            raise ValueError(f"tokens must be non-empty strings; got {_examples(bad_tokens)}")
        bad_ids = [t for t, i in token_to_id.items() if isinstance(i, bool) or not isinstance(i, int | np.integer)]
        if bad_ids:
            raise ValueError(f"ids must be integers; tokens with invalid ids: {_examples(bad_ids)}")
        n = len(token_to_id)
        tokens: list[str | None] = [None] * n
        for token, idx in token_to_id.items():
            idx = int(idx)
            if not 0 <= idx < n:
                raise ValueError(f"ids must be exactly 0..{n - 1}; token {token!r} has id {idx}")
            if tokens[idx] is not None:
                raise ValueError(f"id {idx} is assigned to both {tokens[idx]!r} and {token!r}")
            tokens[idx] = token
        vocab = cls.__new__(cls)
        vocab._init_tokens(tokens)  # type: ignore[arg-type]  # every slot is filled: n distinct ids in 0..n-1
        return vocab

    def to_dict(self) -> dict[str, int]:
        """Return the ``{token: id}`` mapping, ordered by id."""
        return dict(self._ids)

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON (``{token: id}``), atomically.

        Parameters
        ----------
        path
            File path, or an existing directory (the file is then ``<dir>/vocab.json``).
        """
        path = _resolve_path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.to_dict(), fh, ensure_ascii=False, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> GeneVocab:
        """Read a vocabulary written by :meth:`save` (or an scGPT ``vocab.json``).

        Parameters
        ----------
        path
            File path, or a directory containing ``vocab.json``.

        Raises
        ------
        FileNotFoundError
            If the file does not exist.
        ValueError
            If the file is not valid JSON or does not hold a valid ``{token: id}`` mapping.
        """
        path = _resolve_path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file not found: {str(path)!r}")
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"vocabulary file {str(path)!r} is not valid JSON: {err}") from err
        if not isinstance(content, dict):
            raise ValueError(f"vocabulary file {str(path)!r} must hold a JSON object {{token: id}}")
        try:
            return cls.from_dict(content)
        except ValueError as err:
            raise ValueError(f"invalid vocabulary file {str(path)!r}: {err}") from err

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and token in self._ids

    def __getitem__(self, token: str) -> int:
        try:
            return self._ids[token]
        except (KeyError, TypeError):
            hint = ""
            if isinstance(token, str):
                idx = self._upper_map().get(token.upper(), -1)
                if idx >= 0:
                    hint = f"; did you mean {self._tokens[idx]!r}?"
            raise KeyError(f"{token!r} is not in the vocabulary ({len(self)} tokens){hint}") from None

    def token(self, idx: int) -> str:
        """Return the token with id ``idx``."""
        if not 0 <= idx < len(self._tokens):
            raise IndexError(f"token id {idx} is out of range for a vocabulary of {len(self)} tokens")
        return self._tokens[idx]

    @property
    def tokens(self) -> list[str]:
        """All tokens; list index == id."""
        return list(self._tokens)

    @property
    def genes(self) -> list[str]:
        """Gene (non-special) tokens in id order."""
        return list(self._gene_ids)

    @property
    def specials(self) -> list[str]:
        """Special tokens in id order."""
        return [t for t in self._tokens if t not in self._gene_ids]

    @property
    def pad_id(self) -> int:
        """Id of ``"<pad>"``."""
        return self._ids["<pad>"]

    @property
    def cls_id(self) -> int:
        """Id of ``"<cls>"``."""
        return self._ids["<cls>"]

    @property
    def eoc_id(self) -> int | None:
        """Id of ``"<eoc>"``, or ``None`` if absent."""
        return self._ids.get("<eoc>")

    @property
    def mask_id(self) -> int | None:
        """Id of ``"<mask>"``, or ``None`` if absent."""
        return self._ids.get("<mask>")

    def _upper_map(self) -> dict[str, int]:
        # upper-cased gene -> id, or -1 where several genes share the upper-cased form
        if self._upper_ids is None:
            upper: dict[str, int] = {}
            for gene, idx in self._gene_ids.items():
                key = gene.upper()
                upper[key] = -1 if key in upper else idx
            self._upper_ids = upper
        return self._upper_ids

    def lookup(self, names: Iterable[object]) -> np.ndarray:
        """Map names to gene ids by exact match.

        Parameters
        ----------
        names
            Gene names; non-strings (e.g. ``NaN``) never match.

        Returns
        -------
        numpy.ndarray
            ``int64`` ids, ``-1`` where a name is not a gene token. Special tokens are not genes (``-1``).
        """
        get = self._gene_ids.get
        return np.fromiter((get(n, -1) if isinstance(n, str) else -1 for n in names), dtype=np.int64)

    def lookup_casefold(self, names: Iterable[object]) -> np.ndarray:
        """Map names to gene ids by case-insensitive (upper-cased) match.

        An upper-cased name shared by several vocabulary genes (e.g. ``"Abc"`` and ``"ABC"``) is ambiguous and
        maps to ``-1``.

        Returns
        -------
        numpy.ndarray
            ``int64`` ids, ``-1`` where there is no unambiguous match.
        """
        get = self._upper_map().get
        return np.fromiter((get(n.upper(), -1) if isinstance(n, str) else -1 for n in names), dtype=np.int64)

    def _canonical_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the canonical JSON (tokens in id order), for provenance records."""
        return hashlib.sha256(self._canonical_json().encode("utf-8")).hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GeneVocab):
            return NotImplemented
        return self._tokens == other._tokens

    def __hash__(self) -> int:
        return hash(tuple(self._tokens))

    def __repr__(self) -> str:
        return f"GeneVocab(n_genes={len(self._gene_ids)}, specials={self.specials!r})"


def vocabulary_genes(var, gene_key: str | None = None) -> list[str]:
    """Return the gene names a vocabulary built from ``var`` holds.

    These are ``var[gene_key]`` (or the index) without missing, empty or ``<special>`` names and without repeats, in
    order of first appearance. A human Ensembl gene id (with or without version) that the shipped gene table maps to
    exactly one official symbol is replaced by that symbol, so a model trained on Ensembl-named data gets a
    vocabulary of symbols and :func:`~scfm.genes.align_genes` matches both kinds of names to it; other ids are kept
    as given.
    """
    from ._ids import is_ensembl, strip_version
    from ._table import human_gene_table

    names = var[gene_key] if gene_key is not None else var.index.to_series()
    names = names.dropna().astype(str)
    names = names[(names != "") & ~names.str.match(r"^<.*>$")]
    out = list(names)
    ensembl_rows = [i for i, name in enumerate(out) if is_ensembl(name)]
    if ensembl_rows:
        table = human_gene_table()
        for i in ensembl_rows:
            symbols = table.symbols_for_ensembl(strip_version(out[i]))
            if len(symbols) == 1:
                out[i] = symbols[0]
    return list(dict.fromkeys(out))
