"""``scfm`` command line."""

from __future__ import annotations

import argparse
import sys

from scfm import __version__


def _embed(args: argparse.Namespace) -> int:
    import anndata as ad

    from scfm.tl import embed

    adata = ad.read_h5ad(args.input, backed="r" if args.backed else None)
    embed(
        adata,
        args.model,
        layer=args.layer,
        use_raw=args.use_raw,
        gene_key=args.gene_key,
        gene_id_type=args.gene_id_type,
        species=args.species,
        aliases=args.aliases,
        batch_size=args.batch_size,
        key_added=args.key_added,
        device=args.device,
        max_len=args.max_len,
        sample_key=args.sample_key,
        spatial_key=args.spatial_key,
        context=args.context,
        progress=not args.quiet,
        precision=args.precision,
    )
    if args.backed:
        result = ad.AnnData(
            obs=adata.obs.copy(), var=adata.var[[]].copy(), obsm={args.key_added: adata.obsm[args.key_added]}
        )
        result.uns["scfm"] = dict(adata.uns["scfm"])
        result.write_h5ad(args.output)
    else:
        adata.write_h5ad(args.output)
    print(f"wrote {args.output} (obsm[{args.key_added!r}])")
    return 0


def _log_progress() -> None:
    """Show scfm's info messages (e.g. the parameters pretraining freezes) on stderr (``scfm.settings``)."""
    from scfm._settings import settings

    if settings.verbosity < 2:
        settings.verbosity = "info"


def _pretrain(args: argparse.Namespace) -> int:
    import scfm.models  # noqa: F401  (registers the families' pretraining recipes)
    from scfm.train import PretrainConfig, pretrain

    _log_progress()
    config = PretrainConfig.from_yaml(args.config, shards=args.shards, output=args.output)
    if args.no_progress:
        config.trainer.progress_bar = False
    result = pretrain(config, resume=args.resume)
    if result.export is not None:
        print(f"trained to step {result.global_step}; exported {result.export} (load it with scfm.tl.embed(model=...))")
    return 0


def _export(args: argparse.Namespace) -> int:
    import scfm.models  # noqa: F401  (registers the families' pretraining recipes)
    from scfm.train import export_run

    path = export_run(args.run, args.destination, checkpoint=args.checkpoint, overwrite=args.overwrite)
    print(f"wrote scfm checkpoint {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from scfm._demo import run_demo

    run_demo(args.out, model=args.model, device=args.device)
    return 0


def _convert_scgpt(args: argparse.Namespace) -> int:
    from scfm.models.scgpt import write_converted_checkpoint

    path = write_converted_checkpoint(
        args.source, args.destination, drop=args.drop, label_names=args.labels, overwrite=args.overwrite
    )
    print(f"wrote scfm checkpoint {path} (model card: {path / 'model_card.md'})")
    return 0


def _convert_cellplm(args: argparse.Namespace) -> int:
    from scfm.models.cellplm import write_converted_cellplm

    path = write_converted_cellplm(args.config, args.checkpoint, args.destination, overwrite=args.overwrite)
    print(f"wrote scfm checkpoint {path} (model card: {path / 'model_card.md'})")
    return 0


def _convert_tgpt(args: argparse.Namespace) -> int:
    from scfm.models.tgpt import write_converted_tgpt

    path = write_converted_tgpt(args.source, args.destination, overwrite=args.overwrite)
    print(f"wrote scfm checkpoint {path} (model card: {path / 'model_card.md'})")
    return 0


def _convert_scmulan(args: argparse.Namespace) -> int:
    from scfm.models.scmulan import write_converted_scmulan

    path = write_converted_scmulan(args.source, args.destination, meta_info=args.meta_info, overwrite=args.overwrite)
    print(f"wrote scfm checkpoint {path} (model card: {path / 'model_card.md'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the ``scfm`` argument parser with its subcommands.

    Returns
    -------
    The parser. Each subcommand sets ``func``, the handler :func:`main` calls with the parsed arguments.
    """
    parser = argparse.ArgumentParser(prog="scfm", description="Single-cell foundation models for scverse.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    embed = sub.add_parser("embed", help="embed the cells of an .h5ad file; writes obsm[KEY] to OUTPUT")
    embed.add_argument("input", help="input .h5ad")
    embed.add_argument("output", help="output .h5ad (with --backed: obs, var names and the embedding, no matrix)")
    embed.add_argument(
        "--model",
        default=None,
        help="checkpoint directory or bundled name: default (tGPT), scgpt, cellplm or scmulan (default: default)",
    )
    embed.add_argument("--layer", default=None)
    embed.add_argument("--use-raw", action="store_true", help="read adata.raw")
    embed.add_argument("--gene-key", default=None, help="var column with gene symbols or Ensembl ids")
    embed.add_argument(
        "--gene-id-type", default="auto", choices=("auto", "symbol", "ensembl"), help="what the gene names are"
    )
    embed.add_argument(
        "--species", default="human", choices=("human", "mouse"), help="mouse: case-insensitive symbols only"
    )
    embed.add_argument("--aliases", action="store_true", help="also match aliases and previous symbols")
    embed.add_argument("--batch-size", type=int, default=64)
    embed.add_argument("--key-added", default="X_scfm")
    embed.add_argument("--device", default="auto")
    embed.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="fp32 (default, exact) or bf16 autocast on CPU too (faster only on CPUs with AVX512-BF16/AMX)",
    )
    embed.add_argument("--max-len", type=int, default=None)
    embed.add_argument("--sample-key", default=None, help="CellPLM: obs column of samples (sentences never mix them)")
    embed.add_argument("--spatial-key", default=None, help="CellPLM: obsm key of (n_obs, 2) coordinates")
    embed.add_argument("--context", type=int, default=None, help="CellPLM: most cells per sentence")
    embed.add_argument("--backed", action="store_true", help="stream the input from disk")
    embed.add_argument("--quiet", action="store_true", help="no progress bar")
    embed.set_defaults(func=_embed)

    convert = sub.add_parser("convert", help="convert a checkpoint of another code base into an scfm checkpoint")
    families = convert.add_subparsers(dest="family", required=True)
    scgpt = families.add_parser(
        "scgpt",
        help="a reference scGPT checkpoint directory (best_model.pt, args.json, vocab.json)",
        description="Convert a reference scGPT checkpoint directory into an scfm checkpoint directory. Every tensor "
        "is mapped or named in an error; the model card records the source and the sha256 of best_model.pt.",
    )
    scgpt.add_argument("source", help="directory with best_model.pt, args.json and vocab.json")
    scgpt.add_argument("destination", help="scfm checkpoint directory to write")
    scgpt.add_argument(
        "--drop",
        action="append",
        default=[],
        choices=["cls_decoder", "grad_reverse_discriminator", "flag_encoder"],
        help="leave out this reference module on purpose (repeatable); anything else unmapped is an error",
    )
    scgpt.add_argument(
        "--labels",
        default=None,
        help='JSON file with the class names of a fine-tuned cls_decoder (a list, or {"0": name, ...}); '
        "default: id2type.json in SOURCE",
    )
    scgpt.add_argument("--overwrite", action="store_true", help="replace DESTINATION if it exists")
    scgpt.set_defaults(func=_convert_scgpt)
    cellplm = families.add_parser(
        "cellplm",
        help="a reference CellPLM checkpoint ({prefix}.config.json and {prefix}.best.ckpt)",
        description="Convert a reference CellPLM checkpoint (OmicsFormer: Flowformer encoder, Gaussian-mixture "
        "latent, NB decoder) into an scfm checkpoint directory. Every tensor is mapped, dropped because the "
        "released code never uses it (the positional encoding, embedder.norm0), or named in an error; the model "
        "card records the source and the sha256 of the weights.",
    )
    cellplm.add_argument("config", help="the reference {prefix}.config.json (OmicsFormer arguments and gene_list)")
    cellplm.add_argument("checkpoint", help="the reference {prefix}.best.ckpt ({'model_state_dict': ...})")
    cellplm.add_argument("destination", help="scfm checkpoint directory to write")
    cellplm.add_argument("--overwrite", action="store_true", help="replace DESTINATION if it exists")
    cellplm.set_defaults(func=_convert_cellplm)
    tgpt = families.add_parser(
        "tgpt",
        help="a reference tGPT directory (Hugging Face GPT-2: config.json, tokenizer.json, pytorch_model.bin)",
        description="Convert a reference tGPT directory (GPT-2 causal LM over ranked gene tokens) into an scfm "
        "checkpoint directory. Every tensor is mapped or named in an error; the tokenizer's vocabulary becomes "
        "vocab.json; the model card records the source files and their sha256.",
    )
    tgpt.add_argument(
        "source", help="directory with config.json, tokenizer.json and pytorch_model.bin or model.safetensors"
    )
    tgpt.add_argument("destination", help="scfm checkpoint directory to write")
    tgpt.add_argument("--overwrite", action="store_true", help="replace DESTINATION if it exists")
    tgpt.set_defaults(func=_convert_tgpt)
    scmulan = families.add_parser(
        "scmulan",
        help="the public scMulan checkpoint (ckpt_scMulan.pt with the package's meta_info.pt)",
        description="Convert the public scMulan checkpoint (nanoGPT-style decoder with entity and level heads) and "
        "its token vocabulary (meta_info.pt) into an scfm checkpoint directory. Both files are read with "
        "torch.load(weights_only=True); every tensor is mapped or named in an error; the model card records the "
        "source files and their sha256.",
    )
    scmulan.add_argument("source", help="ckpt_scMulan.pt, or a directory holding it and meta_info.pt")
    scmulan.add_argument("destination", help="scfm checkpoint directory to write")
    scmulan.add_argument("--meta-info", default=None, help="meta_info.pt (default: beside the checkpoint)")
    scmulan.add_argument("--overwrite", action="store_true", help="replace DESTINATION if it exists")
    scmulan.set_defaults(func=_convert_scmulan)

    pretrain = sub.add_parser(
        "pretrain",
        help="pretrain a model on streamed .h5ad shards or a SOMA experiment (one process, DDP or many nodes)",
        description="Pretrain from a YAML recipe (see configs/pretrain_example.yaml and docs/pretraining.md). With "
        "trainer.strategy: ddp, Lightning starts one process per device, or launch with torchrun / srun. Training "
        "checkpoints go to OUTPUT/checkpoints; the finished model is exported to OUTPUT/export.",
    )
    pretrain.add_argument(
        "--config", required=True, help="the YAML recipe (relative paths in it are relative to the recipe file)"
    )
    pretrain.add_argument(
        "--shards", nargs="+", metavar="PATH", help="training .h5ad files or globs, replacing the recipe's data.shards"
    )
    pretrain.add_argument("--output", metavar="DIR", help="run directory, replacing the recipe's output")
    pretrain.add_argument("--resume", action="store_true", help="continue from the newest checkpoint of the run")
    pretrain.add_argument("--no-progress", action="store_true", help="no progress bar")
    pretrain.set_defaults(func=_pretrain)

    export = sub.add_parser("export", help="export a pretraining run's checkpoint as an scfm checkpoint directory")
    export.add_argument("run", help="the run directory (the recipe's output)")
    export.add_argument("destination", nargs="?", default=None, help="where to write (default RUN/export)")
    export.add_argument("--checkpoint", default=None, help="a step-*.ckpt of the run (default: the newest)")
    export.add_argument("--overwrite", action="store_true", help="replace DESTINATION if it exists")
    export.set_defaults(func=_export)

    demo = sub.add_parser("demo", help="embed pbmc68k_reduced, write a UMAP PNG and a report")
    demo.add_argument("--out", default="scfm_demo_output")
    demo.add_argument("--model", default=None)
    demo.add_argument("--device", default="auto")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``scfm`` command line.

    Parameters
    ----------
    argv
        Arguments without the program name (``None``: ``sys.argv[1:]``).

    Returns
    -------
    The subcommand's exit status, or 2 when it fails with a ``ValueError``, ``KeyError``, ``FileNotFoundError`` or
    ``FileExistsError``; the message is then printed to stderr.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, TypeError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"scfm {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
