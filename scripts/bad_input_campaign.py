"""Bad-input campaign (issue 18): thousands of generated odd and bad inputs against every public entry point.

Runs the generators of ``tests/test_properties.py`` with a plain random generator: generated AnnData against every
tool and model class, argument fuzzing, tampered checkpoints, and the command line (a non-HDF5 file, a directory, a
missing file, bad options, pickled training checkpoints). Prints a summary table: cases run, unhandled exceptions,
unclear messages (an allowed type raised inside a library with a message that names no argument), inputs changed on
error, non-finite outputs, invalid input accepted, results that depend on the matrix format; with the first
examples of each class.

    .venv/bin/python scripts/bad_input_campaign.py --n 3000      # <= 15 min on two cores
    .venv/bin/python scripts/bad_input_campaign.py --n 200       # smoke, <= 2 min
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import pickle
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
import test_properties as tp  # noqa: E402
import torch  # noqa: E402

EXAMPLES_SHOWN = 3


def cli_case(draw: tp.Draw, models: tp.Models, tmp: Path) -> tp.Outcome:
    """One command line run: it must exit non-zero with a one-line message, or succeed on valid input."""
    from scfm.cli import main

    kind = draw.choice(
        ("not_hdf5", "directory", "missing", "generated", "bad_option", "tampered_model", "pickle_export", "yaml")
    )
    out = tmp / f"out_{draw.integer(0, 10**9)}.h5ad"
    must_fail = True
    if kind == "not_hdf5":
        path = tmp / "text.h5ad"
        path.write_text("not an HDF5 file")
        argv = ["embed", str(path), str(out)]
    elif kind == "directory":
        argv = ["embed", str(tmp), str(out)]
    elif kind == "missing":
        argv = ["embed", str(tmp / "missing.h5ad"), str(out)]
    elif kind in ("generated", "bad_option", "tampered_model"):
        case = tp.draw_case(draw, max_obs=20)
        adata = case.adata.copy() if case.adata.is_view else case.adata
        path = tmp / f"in_{draw.integer(0, 10**9)}.h5ad"
        try:
            adata.write_h5ad(path)
        except Exception:
            return tp.Outcome("ok", "case not storable as h5ad", "cli embed", case.description)
        argv = ["embed", str(path), str(out), "--quiet", "--model", draw.choice(tp.FAMILIES)]
        if "layer" in case.kwargs:
            argv += ["--layer", case.kwargs["layer"]]
        if "gene_key" in case.kwargs:
            argv += ["--gene-key", case.kwargs["gene_key"]]
        must_fail = case.must_fail and not isinstance(case.kwargs.get("key_added"), int | bytes | type(None))
        if isinstance(case.kwargs.get("key_added"), str):
            argv += ["--key-added", case.kwargs["key_added"]]
        if kind == "bad_option":
            option = draw.choice(
                (
                    ["--batch-size", "0"],
                    ["--device", "meta"],
                    ["--max-len", "0"],
                    ["--key-added", "a/b"],
                    ["--key-added", ""],
                    ["--layer", "missing"],
                )
            )
            argv += option
            must_fail = True
        if kind == "tampered_model":
            directory, *_ = tp.tamper_checkpoint(draw, tmp)
            argv[argv.index("--model") + 1] = str(directory)
            must_fail = True
    elif kind == "pickle_export":
        run = tmp / f"run_{draw.integer(0, 10**9)}"
        (run / "checkpoints").mkdir(parents=True)
        shutil.copy(ROOT / "configs" / "pretrain_example.yaml", run / "config.yaml")
        shutil.copy(tp.CHECKPOINTS / "scgpt_default" / "config.json", run / "model_config.json")
        shutil.copy(tp.CHECKPOINTS / "scgpt_default" / "vocab.json", run / "vocab.json")
        marker = run / "PICKLE_EXECUTED"
        (run / "checkpoints" / "step-1.ckpt").write_bytes(pickle.dumps(tp._PickleBomb(str(marker))))
        argv = ["export", str(run), str(tmp / f"exported_{draw.integer(0, 10**9)}")]
    else:
        config = tmp / "recipe.yaml"
        config.write_text(draw.choice(("not: [valid", "{}", "model: 5\n", "")))
        argv = ["pretrain", "--config", str(config), "--no-progress"]
    stderr = io.StringIO()
    label = f"cli {argv[0]} ({kind})"
    shown = " ".join(a if len(a) < 40 else "..." + a[-30:] for a in argv)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except SystemExit as exit_:  # argparse usage errors exit 2 with a usage message
        code = exit_.code
    except Exception as error:
        return tp.Outcome("unhandled", f"escaped main(): {type(error).__name__}: {error}"[:300], label, shown)
    if kind == "pickle_export" and (tmp / argv[1] / "PICKLE_EXECUTED").exists():
        return tp.Outcome("unhandled", "A PICKLE WAS EXECUTED", label, shown)
    message = stderr.getvalue().strip()
    if code != 0:
        if "Traceback" in message:
            return tp.Outcome("unclear", f"exit {code} with a traceback", label, shown)
        if kind == "pickle_export" and "not an scfm training checkpoint" not in message.lower():
            return tp.Outcome("unclear", f"exit {code}: {message[:200]}", label, shown)
        return tp.Outcome("ok", f"exit {code}: {message[:200]}", label, shown)
    if must_fail:
        return tp.Outcome("accepted_invalid", "exit 0", label, shown)
    if kind == "generated":
        import anndata as ad

        try:
            ad.read_h5ad(out)
        except Exception as error:
            return tp.Outcome("accepted_invalid", f"wrote an unreadable h5ad ({type(error).__name__})", label, shown)
    return tp.Outcome("ok", "exit 0", label, shown)


def integrate_case(draw: tp.Draw, models: tp.Models) -> tp.Outcome:
    import scfm

    case = tp.draw_case(draw, max_obs=16)
    kwargs = {k: v for k, v in case.kwargs.items() if k != "min_genes"}
    key = case.kwargs.get("key_added", "X_scfm_integrated")

    def call():
        return scfm.tl.integrate(
            case.adata,
            "batch",
            model=models.pretrained["scgpt"],
            max_epochs=1,
            batch_size=4,
            n_top_genes=None,
            min_genes=5,
            progress=False,
            device="cpu",
            **kwargs,
        )

    return tp.run_case(
        "tl.integrate",
        call,
        [case.adata] + ([case.parent] if case.parent is not None else []),
        must_fail=case.must_fail,
        outputs=lambda _: [case.adata.obsm.get(key)],
        allowed_changes=tp._result_slots(key),
        case=case.description,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="entry-point calls to run (approximately)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=14.0, help="stop generating after this long")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    import logging

    logging.disable(logging.WARNING)

    start = time.perf_counter()
    models = tp.Models.load()
    outcomes: list[tp.Outcome] = []
    rng = np.random.default_rng(args.seed)
    # share of calls: generated AnnData x every tool (each case runs ~8 entry points), arguments, checkpoints, CLI
    plan = {"tools": 0.45, "arguments": 0.3, "checkpoints": 0.12, "cli": 0.11, "integrate": 0.02}
    counts = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        while len(outcomes) < args.n and time.perf_counter() - start < args.minutes * 60:
            draw = tp.RandomDraw(int(rng.integers(2**32)))
            kind = str(rng.choice(list(plan), p=list(plan.values())))
            if kind == "integrate" and counts["integrate"] >= max(3, args.n // 150):
                kind = "tools"
            counts[kind] += 1
            if kind == "tools":
                case = tp.draw_case(draw)
                new = tp.run_tools(models, case, draw)
            elif kind == "arguments":
                new = [tp.run_argument_case(models, tmp, draw)]
            elif kind == "checkpoints":
                new = [tp.run_checkpoint_case(models, tmp, draw)]
            elif kind == "cli":
                new = [cli_case(draw, models, tmp)]
            else:
                new = [integrate_case(draw, models)]
            outcomes.extend(new)
    seconds = time.perf_counter() - start
    report(outcomes, seconds, counts)
    return 0


def report(outcomes: list[tp.Outcome], seconds: float, counts: collections.Counter) -> None:
    by_kind = collections.Counter(o.kind for o in outcomes)
    errors = sum(
        1 for o in outcomes if o.kind == "ok" and o.detail not in ("finite result", "finite result, invariant")
    )
    print(f"\nbad-input campaign: {len(outcomes)} cases in {seconds:.0f} s ({dict(counts)} generated inputs)")
    print(f"{'class':<22}{'cases':>8}")
    print(f"{'clean error':<22}{errors:>8}")
    print(f"{'finite result':<22}{by_kind['ok'] - errors:>8}")
    for kind in tp.FAILURE_KINDS:
        print(f"{kind:<22}{by_kind[kind]:>8}")
    per_entry = collections.defaultdict(collections.Counter)
    for o in outcomes:
        per_entry[o.entry][o.kind] += 1
    print(f"\n{'entry point':<58}{'cases':>7}{'ok':>6}  failures")
    for entry in sorted(per_entry):
        c = per_entry[entry]
        bad = ", ".join(f"{k}={v}" for k, v in c.items() if k != "ok")
        print(f"{entry[:57]:<58}{sum(c.values()):>7}{c['ok']:>6}  {bad}")
    for kind in tp.FAILURE_KINDS:
        found = [o for o in outcomes if o.kind == kind]
        if not found:
            continue
        print(f"\n== {kind}: {len(found)} (distinct messages, first {EXAMPLES_SHOWN} of each entry point)")
        seen = collections.Counter()
        shown_messages = set()
        for o in found:
            signature = (o.entry.split("[")[0], o.detail[:80])
            if signature in shown_messages or seen[o.entry] >= EXAMPLES_SHOWN:
                continue
            shown_messages.add(signature)
            seen[o.entry] += 1
            print(f"- {o.entry}: {o.detail[:300]}\n    case: {o.case[:300]}")


if __name__ == "__main__":
    sys.exit(main())
