"""Build the compact human gene table shipped in ``src/scfm/genes/data`` from the org.Hs.eg.db extract.

The source is ``human_genes_orgHsegdb_3.16.tsv.gz`` (77,614 human genes read from Bioconductor's org.Hs.eg.db 3.16.0,
NCBI Entrez Gene data of 2022-09-12; see ``../shared/data/MANIFEST.md`` section 10). The compact table keeps what
gene-name resolution needs, one row per official symbol:

``symbol``
    Official symbol. Genes sharing an official symbol (104 symbols in the source) are merged into one row.
``ensembl_ids``
    ``|``-separated Ensembl gene ids, without version suffix.
``aliases``
    ``|``-separated aliases and previous symbols, without the row's own symbol.

Rows are sorted by symbol and ids/aliases within a row are sorted, so the output only changes when the source does.
A JSON file next to the table records the source, its date and sha256, and the counts of known traps (ambiguous
Ensembl ids and aliases, aliases equal to another gene's official symbol).

Usage::

    python scripts/build_gene_table.py [SOURCE] [--out src/scfm/genes/data]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from collections import defaultdict
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "genes" / "human_genes_orgHsegdb_3.16.tsv.gz"
DEFAULT_OUT = ROOT / "src" / "scfm" / "genes" / "data"
TABLE_NAME = "human_genes.tsv.gz"
META_NAME = "human_genes.json"
SOURCE_INFO = {
    "source": "Bioconductor org.Hs.eg.db 3.16.0 (Debian r-bioc-org.hs.eg.db, extdata/org.Hs.eg.sqlite)",
    "source_file": "human_genes_orgHsegdb_3.16.tsv.gz",
    "source_data_date": "2022-09-12",
    "source_data": "NCBI Entrez Gene (public), Ensembl gene ids as cross-referenced by NCBI",
    "licence": "org.Hs.eg.db: Artistic-2.0; underlying NCBI data: public",
}
EXPECTED_COLUMNS = ("entrez_id", "symbol", "ensembl_ids", "aliases")


def _split(field: str) -> list[str]:
    return [item.strip() for item in field.split("|") if item.strip()]


def _strip_version(ensembl_id: str) -> str:
    return ensembl_id.split(".", 1)[0]


def read_source(path: Path) -> pd.DataFrame:
    """Read the org.Hs.eg.db extract as strings; raise if a needed column is missing."""
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in EXPECTED_COLUMNS if c not in table.columns]
    if missing:
        raise SystemExit(f"{path}: missing columns {missing}; expected at least {list(EXPECTED_COLUMNS)}")
    return table


def compact(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Merge rows per official symbol and return the compact table and counts of the traps it holds."""
    ensembl: dict[str, set[str]] = defaultdict(set)
    aliases: dict[str, set[str]] = defaultdict(set)
    for symbol, ids, names in zip(table["symbol"], table["ensembl_ids"], table["aliases"], strict=True):
        if not symbol:
            continue
        ensembl[symbol].update(_strip_version(i) for i in _split(ids))
        aliases[symbol].update(a for a in _split(names) if a != symbol)
    symbols = sorted(ensembl)
    out = pd.DataFrame(
        {
            "symbol": symbols,
            "ensembl_ids": ["|".join(sorted(ensembl[s])) for s in symbols],
            "aliases": ["|".join(sorted(aliases[s])) for s in symbols],
        }
    )
    id_owners: dict[str, set[str]] = defaultdict(set)
    alias_owners: dict[str, set[str]] = defaultdict(set)
    for symbol in symbols:
        for i in ensembl[symbol]:
            id_owners[i].add(symbol)
        for a in aliases[symbol]:
            alias_owners[a].add(symbol)
    official = set(symbols)
    counts = {
        "n_source_rows": int(table.shape[0]),
        "n_symbols": len(symbols),
        "n_duplicated_symbols_merged": int(table.loc[table["symbol"] != "", "symbol"].duplicated().sum()),
        "n_symbols_with_ensembl": int(sum(1 for s in symbols if ensembl[s])),
        "n_ensembl_ids": len(id_owners),
        "n_ensembl_ids_several_symbols": sum(1 for owners in id_owners.values() if len(owners) > 1),
        "n_aliases": len(alias_owners),
        "n_aliases_several_symbols": sum(1 for owners in alias_owners.values() if len(owners) > 1),
        "n_aliases_equal_to_official_symbol": sum(1 for a in alias_owners if a in official),
    }
    return out, counts


def write(out_table: pd.DataFrame, meta: dict, out_dir: Path) -> Path:
    """Write the table (gzip with a fixed mtime, so rebuilding gives identical bytes) and its JSON description."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / TABLE_NAME
    text = out_table.to_csv(sep="\t", index=False, lineterminator="\n").encode("utf-8")
    with open(target, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(text)
    meta = {**meta, "table": TABLE_NAME, "table_sha256": hashlib.sha256(target.read_bytes()).hexdigest()}
    (out_dir / META_NAME).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if not args.source.is_file():
        raise SystemExit(f"source table not found: {args.source} (see ../shared/data/MANIFEST.md section 10)")
    table = read_source(args.source)
    out_table, counts = compact(table)
    meta = {
        **SOURCE_INFO,
        "source_sha256": hashlib.sha256(args.source.read_bytes()).hexdigest(),
        "built_by": "scripts/build_gene_table.py",
        **counts,
    }
    target = write(out_table, meta, args.out)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB): {json.dumps(counts)}")


if __name__ == "__main__":
    main()
