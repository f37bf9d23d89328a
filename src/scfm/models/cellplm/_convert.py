"""Import checkpoints of the reference CellPLM code (``{prefix}.config.json`` + ``{prefix}.best.ckpt``).

The reference package (``cellplm`` 0.1.0.post2, ``CellPLM.model.OmicsFormer``) stores the constructor keyword
arguments of its model, gene list included, as JSON, and the weights as ``{"model_state_dict": ...}``. Every
tensor of that state dict is mapped to an scfm name, dropped for a stated reason, or named in an error.

Dropped on purpose, because the released reference code never uses them:

- ``embedder.pe_enc.*``: the released embedder adds the constant ``0.`` where its positional encoding would go
  (``pe = 0.  # self.pe_enc(pe_input)``), so neither the sinusoidal table nor ``missing_pe`` reaches the model.
  The converted model therefore has ``positional_encoding="none"``.
- ``embedder.norm0.*``: a norm whose only use in ``OmicsEmbeddingLayer.forward`` is commented out.

``norm`` (``"layernorm"`` or ``"groupnorm"``, 4 groups) is the norm of ``embedder.extra_linear[3]`` and of the
decoder blocks (``decoder.layers[i][3]``), and becomes :attr:`CellPLMConfig.norm`; the Flowformer layers and the
pre-latent norm are LayerNorms in the reference whatever ``norm`` says, as in scfm.

Folded: the decoder covariate layers of a model trained with ``batch_num``, ``dataset_num`` or ``platform_num``
> 0 (``decoder.covariate_layers.{i}.{batch,dataset,platform}`` = Embedding, PReLU, norm). Given no covariate
label, ``NBMLPDecoder.forward`` adds after block ``i``, for each covariate type, the constant
``norm(PReLU(embedding.weight.sum(0)))`` (the sum of the embedding rows). Their sum per block becomes
``decoder.offsets[i]`` (computed in float64, stored in float32; ``decoder_offsets=True``). Only that
"no label" behaviour is kept: scfm's decoder has no per-batch covariates, so the reference's decoding with a
given batch, dataset or platform label is not reproduced. The embedding path never sees these covariates
(``OmicsEmbeddingLayer`` injects them only with ``input_covariate=True``, which is refused).

Refused, each with an error naming the problem: encoders other than Flowformer (the reference's vanilla
transformer uses RMSNorm and spectrally re-parameterised linear layers), latents other than the Gaussian
mixture (``gmvae``), decoders other than ``nbmlp``, norms other than LayerNorm and GroupNorm, fine-tuned task
heads, DSBN, input covariates, the adversarial batch discriminator, a concatenated positional encoding
(``cat_pe=True``), and state dicts with missing, unexpected or mis-shaped tensors.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from scfm.genes import GeneVocab

from ..base._checkpoint import CheckpointError, file_sha256, load_weights_strict, read_torch_state_dict, save_checkpoint
from ._config import CellPLMConfig
from ._model import SPECIALS
from ._module import CellPLMModule

REFERENCE = "cellplm 0.1.0.post2 (CellPLM.model.OmicsFormer)"
# OmicsFormer's constructor defaults for the settings the conversion reads; a config without a key means these.
REFERENCE_DEFAULTS: dict[str, Any] = {
    "batch_num": 0,
    "dataset_num": 0,
    "platform_num": 0,
    "mask_type": "input",
    "model_dropout": 0.1,
    "norm": "layernorm",
    "enc_head": 8,
    "mask_node_rate": 0.5,
    "mask_feature_rate": 0.8,
    "pe_type": "sin",
    "cat_pe": True,
    "latent_mod": "vae",
    "head_type": None,
    "dsbn": False,
    "dar": False,
    "input_covariate": False,
    "num_clusters": 16,
}
REQUIRED_KEYS = (
    "gene_list",
    "enc_mod",
    "enc_hid",
    "enc_layers",
    "post_latent_dim",
    "dec_mod",
    "dec_hid",
    "dec_layers",
    "out_dim",
)
# Fixed widths of the reference: the hidden layer of q(z|h,y) (InferenceNet) and the NB decoder's dec_1.
GMVAE_HIDDEN = 512
NB_BOTTLENECK = 128
# Norms the conversion maps (the reference's create_norm: GroupNorm with 4 groups; both with eps 1e-5).
NORMS = ("layernorm", "groupnorm")
NORM_GROUPS = 4
NORM_EPS = 1e-5
# Covariate types of NBMLPDecoder, in its order, with the config key that sizes each embedding table.
COVARIATES = {"batch": "batch_num", "dataset": "dataset_num", "platform": "platform_num"}
COVARIATE_NOTE = (
    "decoder.covariate_layers.* folded into constant offsets: after decoder block i, the sum over covariate types "
    "of norm(PReLU(embedding.weight.sum(0))), which the reference decoder adds when given no covariate label. "
    "scfm has no per-batch decoder covariates: decoding with a specific batch/dataset/platform label (the "
    "reference's covariate-aware denoising) is not reproduced."
)
# Reference tensors that the released code never uses (see the module docstring).
DROPPED_PREFIXES = ("embedder.pe_enc.", "embedder.norm0.")

_GMVAE = "latent.layers.1.inference."
_LAYER = r"encoder\.layers\.(\d+)\."
KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"embedder\.feat_enc\.emb", "gene_embedding"),
    (r"embedder\.extra_linear\.([03])\.(weight|bias)", r"input_projection.\1.\2"),
    (_LAYER + r"self_attn\.out_projection\.(weight|bias)", r"encoder.layers.\1.self_attn.out_proj.\2"),
    (_LAYER + r"_ff_block\.0\.(weight|bias)", r"encoder.layers.\1.linear1.\2"),
    (_LAYER + r"_ff_block\.3\.(weight|bias)", r"encoder.layers.\1.linear2.\2"),
    (_LAYER + r"(norm1|norm2)\.(weight|bias)", r"encoder.layers.\1.\2.\3"),
    (r"pre_latent_norm\.norm\.(weight|bias)", r"encoder.final_norm.\1"),
    (re.escape(_GMVAE) + r"inference_qyx\.0\.logits\.(weight|bias)", r"latent.component_logits.\1"),
    (re.escape(_GMVAE) + r"inference_qzyx\.0\.(weight|bias)", r"latent.posterior_hidden.\1"),
    (re.escape(_GMVAE) + r"inference_qzyx\.2\.mu\.(weight|bias)", r"latent.posterior_mean.\1"),
    (re.escape(_GMVAE) + r"inference_qzyx\.2\.var\.(weight|bias)", r"latent.posterior_var.\1"),
    (re.escape(_GMVAE) + r"y_mu\.(weight|bias)", r"latent.prior_mean.\1"),
    (re.escape(_GMVAE) + r"y_var\.(weight|bias)", r"latent.prior_var.\1"),
    (r"decoder\.layers\.(\d+)\.([013])\.(weight|bias)", r"decoder.layers.\1.\2.\3"),
    (r"decoder\.out_layer\.dec_1\.(weight|bias)", r"decoder.bottleneck.\1"),
    (r"decoder\.out_layer\.dec_mean\.0\.(weight|bias)", r"decoder.gene_logits.\1"),
    (r"decoder\.out_layer\.dec_disp", "decoder.log_theta"),
)
_COMPILED_RULES = tuple((re.compile(pattern + r"\Z"), target) for pattern, target in KEY_RULES)
# The Flowformer's separate q, k, v projections, concatenated (in this order) into scfm's packed in_proj.
_QKV = re.compile(_LAYER + r"self_attn\.(query|key|value)_projection\.(weight|bias)\Z")
_QKV_ORDER = ("query", "key", "value")
# State-dict prefixes of reference modules scfm has no counterpart for, with what they are.
_UNSUPPORTED_PREFIXES = {
    "head.": "a fine-tuned task head (head.*): this is a fine-tuned model, not a pretrained CellPLM",
    "pre_latent_norm.norm.bns.": "domain-specific batch norm (dsbn)",
    "embedder.cov_enc.": "input covariate embeddings (input_covariate)",
}


def reference_key_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor a supported reference ``OmicsFormer`` must hold, with its shape (dropped tensors excluded).

    Supported means what :func:`check_reference_config` accepts: Flowformer encoder, ``gmvae`` latent,
    ``nbmlp`` decoder (with its covariate layers when the config has covariates), LayerNorm or GroupNorm.
    """
    d, n_genes = int(config["enc_hid"]), len(config["gene_list"])
    latent, clusters = int(config["post_latent_dim"]), int(_setting(config, "num_clusters"))
    dec_hid, dec_layers, out_dim = int(config["dec_hid"]), int(config["dec_layers"]), int(config["out_dim"])
    shapes: dict[str, tuple[int, ...]] = {
        "embedder.feat_enc.emb": (n_genes, d),
        "embedder.extra_linear.0.weight": (d, d),
        "embedder.extra_linear.0.bias": (d,),
        "embedder.extra_linear.3.weight": (d,),
        "embedder.extra_linear.3.bias": (d,),
    }
    for i in range(int(config["enc_layers"])):
        prefix = f"encoder.layers.{i}."
        for name in ("query", "key", "value", "out"):
            shapes[f"{prefix}self_attn.{name}_projection.weight"] = (d, d)
            shapes[f"{prefix}self_attn.{name}_projection.bias"] = (d,)
        shapes[f"{prefix}_ff_block.0.weight"] = (2 * d, d)
        shapes[f"{prefix}_ff_block.0.bias"] = (2 * d,)
        shapes[f"{prefix}_ff_block.3.weight"] = (d, 2 * d)
        shapes[f"{prefix}_ff_block.3.bias"] = (d,)
        for norm in ("norm1", "norm2"):
            shapes[f"{prefix}{norm}.weight"] = (d,)
            shapes[f"{prefix}{norm}.bias"] = (d,)
    shapes["pre_latent_norm.norm.weight"] = (d,)
    shapes["pre_latent_norm.norm.bias"] = (d,)
    for name, shape in {
        "inference_qyx.0.logits": (clusters, d),
        "inference_qzyx.0": (GMVAE_HIDDEN, d + clusters),
        "inference_qzyx.2.mu": (latent, GMVAE_HIDDEN),
        "inference_qzyx.2.var": (latent, GMVAE_HIDDEN),
        "y_mu": (latent, clusters),
        "y_var": (latent, clusters),
    }.items():
        shapes[f"{_GMVAE}{name}.weight"] = shape
        shapes[f"{_GMVAE}{name}.bias"] = shape[:1]
    for i in range(dec_layers - 1):
        prefix = f"decoder.layers.{i}."
        shapes[f"{prefix}0.weight"] = (dec_hid, latent if i == 0 else dec_hid)
        shapes[f"{prefix}0.bias"] = (dec_hid,)
        shapes[f"{prefix}1.weight"] = (1,)  # PReLU
        shapes[f"{prefix}3.weight"] = (dec_hid,)
        shapes[f"{prefix}3.bias"] = (dec_hid,)
        for cov, n in decoder_covariates(config).items():
            cov_prefix = f"decoder.covariate_layers.{i}.{cov}."
            shapes[f"{cov_prefix}0.weight"] = (n, dec_hid)  # Embedding
            shapes[f"{cov_prefix}1.weight"] = (1,)  # PReLU
            shapes[f"{cov_prefix}2.weight"] = (dec_hid,)  # norm
            shapes[f"{cov_prefix}2.bias"] = (dec_hid,)
    shapes["decoder.out_layer.dec_1.weight"] = (NB_BOTTLENECK, dec_hid)
    shapes["decoder.out_layer.dec_1.bias"] = (NB_BOTTLENECK,)
    shapes["decoder.out_layer.dec_mean.0.weight"] = (out_dim, NB_BOTTLENECK)
    shapes["decoder.out_layer.dec_mean.0.bias"] = (out_dim,)
    shapes["decoder.out_layer.dec_disp"] = (out_dim,)
    return shapes


def _setting(config: Mapping[str, Any], key: str) -> Any:
    return config[key] if key in config else REFERENCE_DEFAULTS[key]


def decoder_covariates(config: Mapping[str, Any]) -> dict[str, int]:
    """Return the covariate types of the reference decoder with their table sizes (empty without decoder blocks)."""
    if int(config["dec_layers"]) < 2:  # no hidden block, hence no covariate layer
        return {}
    sizes = {cov: int(_setting(config, key) or 0) for cov, key in COVARIATES.items()}
    return {cov: n for cov, n in sizes.items() if n > 0}


def check_reference_config(config: Mapping[str, Any], source: str = "the CellPLM config") -> None:
    """Raise a :class:`CheckpointError` listing every setting of ``config`` that scfm cannot reproduce."""
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise CheckpointError(f"{source} lacks {missing}; a CellPLM config holds the OmicsFormer keyword arguments")
    genes = config["gene_list"]
    if not isinstance(genes, list) or not genes or not all(isinstance(g, str) for g in genes):
        raise CheckpointError(f"{source}: gene_list must be a non-empty list of gene names")
    problems = []
    enc_mod = config["enc_mod"]
    if enc_mod == "transformer":
        problems.append(
            "enc_mod='transformer': the reference's vanilla transformer layer uses RMSNorm and spectrally "
            "re-parameterised linear layers (weights rescaled by a power-iteration estimate at every call), which "
            "scfm does not implement; only enc_mod='flowformer' converts"
        )
    elif enc_mod != "flowformer":
        problems.append(f"enc_mod={enc_mod!r}: only the Flowformer encoder ('flowformer') converts")
    if _setting(config, "latent_mod") != "gmvae":
        problems.append(
            f"latent_mod={_setting(config, 'latent_mod')!r}: only the Gaussian-mixture latent ('gmvae') converts"
        )
    if config["dec_mod"] != "nbmlp":
        problems.append(f"dec_mod={config['dec_mod']!r}: only the negative-binomial MLP decoder ('nbmlp') converts")
    if _setting(config, "norm") not in NORMS:
        problems.append(
            f"norm={_setting(config, 'norm')!r}: the reference puts that norm after the gene-embedding projection "
            "and in the decoder; only norm='layernorm' or 'groupnorm' converts"
        )
    if _setting(config, "head_type") is not None:
        problems.append(
            f"head_type={_setting(config, 'head_type')!r}: a fine-tuned task model, not a pretrained CellPLM"
        )
    if _setting(config, "dsbn"):
        problems.append("dsbn=true: domain-specific batch norm before the latent is not implemented")
    if _setting(config, "input_covariate"):
        problems.append("input_covariate=true: covariate embeddings added to the input are not implemented")
    if _setting(config, "dar"):
        problems.append("dar=true: the adversarial batch discriminator in the latent is not implemented")
    if _setting(config, "pe_type") is not None and _setting(config, "cat_pe"):
        problems.append(
            "cat_pe=true: the gene embedding fills half the input width and the positional encoding the other half "
            "(the released embedder even fails there: it concatenates the float 0. instead of the encoding); only "
            "cat_pe=false (the encoding is replaced by 0) or pe_type=null converts"
        )
    for key in COVARIATES.values():
        value = _setting(config, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            problems.append(f"{key}={value!r} must be a non-negative integer")
    if int(config["out_dim"]) != len(genes):
        problems.append(f"out_dim={config['out_dim']} but gene_list has {len(genes)} genes (the decoder's outputs)")
    if int(config["dec_layers"]) < 1:
        problems.append(f"dec_layers={config['dec_layers']} must be >= 1")
    elif int(config["dec_layers"]) == 1 and int(config["dec_hid"]) != int(config["post_latent_dim"]):
        problems.append("dec_layers=1 with dec_hid != post_latent_dim: the reference decoder cannot run it")
    if problems:
        raise CheckpointError(f"{source} cannot be converted: " + "; ".join(problems))


def config_from_reference(config: Mapping[str, Any], source: str = "the CellPLM config") -> CellPLMConfig:
    """Return the :class:`CellPLMConfig` of a reference config (checked with :func:`check_reference_config`)."""
    check_reference_config(config, source)
    d_model = int(config["enc_hid"])
    settings: dict[str, Any] = {}
    rates = (_setting(config, "mask_node_rate"), _setting(config, "mask_feature_rate"))
    if _setting(config, "mask_type") == "input" and all(0.0 < float(r) < 1.0 for r in rates):
        settings = {"mask_cell_rate": float(rates[0]), "mask_gene_rate": float(rates[1])}
    try:
        return CellPLMConfig(
            n_genes=len(config["gene_list"]),
            first_gene_id=len(SPECIALS),
            d_model=d_model,
            n_heads=int(_setting(config, "enc_head")),
            n_layers=int(config["enc_layers"]),
            d_hidden=2 * d_model,
            attention="flow",
            dropout=float(_setting(config, "model_dropout")),
            latent_dim=int(config["post_latent_dim"]),
            n_components=int(_setting(config, "num_clusters")),
            latent_hidden=GMVAE_HIDDEN,
            decoder_hidden=int(config["dec_hid"]),
            decoder_layers=int(config["dec_layers"]),
            decoder_bottleneck=NB_BOTTLENECK,
            norm=str(_setting(config, "norm")),
            decoder_offsets=bool(decoder_covariates(config)),
            positional_encoding="none",
            normalize_total=None,
            **settings,
        )
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: cannot build a CellPLM config: {err}") from err


def _map_key(key: str) -> str | None:
    for pattern, target in _COMPILED_RULES:
        if pattern.match(key):
            return pattern.sub(target, key)
    return None


def _mapped_state_dict(
    state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], source: str
) -> dict[str, torch.Tensor]:
    """Rename the (already checked) reference tensors; q, k and v are stacked into ``in_proj``."""
    mapped: dict[str, torch.Tensor] = {}
    for key in expected:
        if key.startswith("decoder.covariate_layers."):  # folded into decoder.offsets below
            continue
        value = state_dict[key].detach().float()
        if (match := _QKV.match(key)) is not None:
            layer, part, kind = match.groups()
            if part == _QKV_ORDER[0]:
                parts = [state_dict[key.replace(".query_projection.", f".{p}_projection.")] for p in _QKV_ORDER]
                mapped[f"encoder.layers.{layer}.self_attn.in_proj.{kind}"] = torch.cat(parts).detach().float()
            continue
        target = _map_key(key)
        if target is None:  # the table and the rules disagree: a bug, not a user error
            raise CheckpointError(f"{source}: no scfm name for reference tensor {key!r}")
        mapped[target] = value
    return mapped


def covariate_offsets(config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``(dec_layers - 1, dec_hid)``: what the reference decoder adds after each block when given no covariates.

    ``NBMLPDecoder.forward`` without a ``batch``/``dataset``/``platform`` label adds, for each covariate type,
    ``norm(PReLU(embedding.weight.sum(0)))``. Computed in float64, returned in float32.
    """
    covariates = decoder_covariates(config)
    norm, dec_hid = _setting(config, "norm"), int(config["dec_hid"])
    offsets = torch.zeros(int(config["dec_layers"]) - 1, dec_hid, dtype=torch.float64)
    for i in range(offsets.shape[0]):
        for cov in covariates:
            prefix = f"decoder.covariate_layers.{i}.{cov}."
            x = state_dict[f"{prefix}0.weight"].detach().double().sum(0, keepdim=True)
            x = F.prelu(x, state_dict[f"{prefix}1.weight"].detach().double())
            weight, bias = state_dict[f"{prefix}2.weight"].detach().double(), state_dict[f"{prefix}2.bias"].detach()
            if norm == "groupnorm":
                x = F.group_norm(x, NORM_GROUPS, weight, bias.double(), eps=NORM_EPS)
            else:
                x = F.layer_norm(x, (dec_hid,), weight, bias.double(), eps=NORM_EPS)
            offsets[i] += x[0]
    return offsets.float()


def convert_reference_state_dict(
    config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], *, source: str = "the CellPLM checkpoint"
) -> tuple[CellPLMConfig, GeneVocab, dict[str, torch.Tensor]]:
    """Map a reference ``OmicsFormer`` state dict onto :class:`CellPLMModule`.

    Parameters
    ----------
    config
        The reference's ``*.config.json``: ``OmicsFormer`` keyword arguments with ``gene_list``.
    state_dict
        Its ``model_state_dict`` (DDP's ``module.`` prefixes are stripped).
    source
        Named in error messages.

    Returns
    -------
    The scfm config (``extra`` records the reference config and the dropped tensors), the vocabulary
    (``<pad>``, ``<cls>``, then ``gene_list`` in order) and the scfm state dict, every tensor of
    :class:`CellPLMModule` filled exactly once.

    Raises
    ------
    CheckpointError
        Unsupported settings (see :func:`check_reference_config`), modules scfm lacks, missing, unexpected or
        mis-shaped tensors (all listed), or a gene list the vocabulary refuses (duplicates, special names).
    """
    scfm_config = config_from_reference(config, source)
    try:
        vocab = GeneVocab(list(config["gene_list"]), specials=SPECIALS)
    except ValueError as err:
        raise CheckpointError(f"{source}: gene_list is not a usable vocabulary: {err}") from err
    state_dict = dict(state_dict)
    if state_dict and all(key.startswith("module.") for key in state_dict):
        state_dict = {key[len("module.") :]: value for key, value in state_dict.items()}
    not_tensors = sorted(k for k, v in state_dict.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(f"{source}: entries that are not tensors: {not_tensors[:8]}")

    unsupported = sorted({what for key in state_dict for p, what in _UNSUPPORTED_PREFIXES.items() if key.startswith(p)})
    if unsupported:
        raise CheckpointError(f"{source} holds {'; '.join(unsupported)}, which scfm cannot convert")
    expected = reference_key_shapes(config)
    droppable = DROPPED_PREFIXES if _setting(config, "pe_type") is not None else DROPPED_PREFIXES[1:]
    dropped = sorted(k for k in state_dict if k not in expected and k.startswith(droppable))
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected) - set(dropped))
    mismatched = [
        f"{key} {tuple(state_dict[key].shape)} vs {expected[key]}"
        for key in expected
        if key in state_dict and tuple(state_dict[key].shape) != expected[key]
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:12]}{' ...' if len(missing) > 12 else ''}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected[:12]}{' ...' if len(unexpected) > 12 else ''}")
        if mismatched:
            parts.append(f"shape mismatches (file vs config) {mismatched[:12]}")
        raise CheckpointError(f"the weights of {source} do not match its config: " + "; ".join(parts))

    mapped = _mapped_state_dict(state_dict, expected, source)
    covariates = decoder_covariates(config)
    if covariates:
        mapped["decoder.offsets"] = covariate_offsets(config, state_dict)
    scfm_config.extra = {
        "converted_from": "cellplm",
        "reference": REFERENCE,
        "reference_config": {k: v for k, v in config.items() if k != "gene_list"},
        "dropped": dropped,
    }
    if covariates:
        scfm_config.extra["folded_covariates"] = {
            "sizes": covariates,
            "into": "decoder.offsets",
            "note": COVARIATE_NOTE,
        }
    return scfm_config, vocab, mapped


def read_reference_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a reference ``*.config.json`` (a JSON object)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no CellPLM config at {str(path)!r} (the reference's {{prefix}}.config.json)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} must hold a JSON object of OmicsFormer arguments")
    return config


def read_reference_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read ``model_state_dict`` from a reference ``*.best.ckpt`` with ``torch.load(..., weights_only=True)``.

    Nothing but tensors and plain containers is unpickled; a file that needs more is refused.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no CellPLM weights at {str(path)!r} (the reference's {{prefix}}.best.ckpt)")
    return read_torch_state_dict(
        path,
        "torch.save({'model_state_dict': model.state_dict()}, path)",
        layout="{'model_state_dict': {name: tensor}} as the reference saves it",
    )


def convert_cellplm_checkpoint(
    config_path: str | os.PathLike, ckpt_path: str | os.PathLike
) -> tuple[CellPLMModule, GeneVocab, str]:
    """Convert reference files into a :class:`CellPLMModule` (eval mode), its vocabulary and a model card."""
    config_path, ckpt_path = Path(config_path).expanduser(), Path(ckpt_path).expanduser()
    reference_config = read_reference_config(config_path)
    state_dict = read_reference_state_dict(ckpt_path)
    config, vocab, mapped = convert_reference_state_dict(reference_config, state_dict, source=str(ckpt_path))
    sha256 = file_sha256(ckpt_path)
    config.extra = {
        **config.extra,
        "source_config": str(config_path.resolve()),
        "source_weights": str(ckpt_path.resolve()),
        "source_sha256": sha256,
    }
    module = CellPLMModule(config)
    load_weights_strict(module, mapped, str(ckpt_path), config_file=config_path.name)
    module.eval()
    return module, vocab, _model_card(module, config_path, ckpt_path, sha256)


def write_converted_cellplm(
    config_path: str | os.PathLike,
    ckpt_path: str | os.PathLike,
    destination: str | os.PathLike,
    overwrite: bool = False,
) -> Path:
    """Convert a reference CellPLM checkpoint and write it as an scfm checkpoint directory (atomically).

    The directory loads with :func:`~scfm.models.load_pretrained`,
    :meth:`CellPLM.from_pretrained <scfm.models.CellPLM.from_pretrained>` and ``scfm.tl.embed(adata, model=...)``.
    """
    module, vocab, card = convert_cellplm_checkpoint(config_path, ckpt_path)
    return save_checkpoint(
        destination,
        config=module.config.to_dict(),
        vocab=vocab,
        state_dict=module.state_dict(),
        model_card=card,
        overwrite=overwrite,
    )


def _model_card(module: CellPLMModule, config_path: Path, ckpt_path: Path, sha256: str) -> str:
    config = module.config
    n_params = sum(p.numel() for p in module.parameters())
    dropped = ", ".join(config.extra["dropped"]) or "none"
    folded = config.extra.get("folded_covariates")
    covariates = ""
    if folded:
        sizes = ", ".join(f"{cov} ({n} embeddings)" for cov, n in folded["sizes"].items())
        covariates = (
            f"- Decoder covariates folded: {sizes}. {folded['note']} The embeddings never depend on them "
            "(the reference injects covariates into the input only with `input_covariate=True`).\n"
        )
    reference = json.dumps(config.extra["reference_config"], indent=2, sort_keys=True, default=str)
    return f"""# CellPLM checkpoint converted by scfm

- source config: `{config_path.resolve()}`
- source weights: `{ckpt_path.resolve()}`, sha256 `{sha256}`
- reference code: {REFERENCE}
- converted: {dt.date.today().isoformat()} with `scfm convert cellplm`
- parameters: {n_params:,}; {config.n_layers} Flowformer layers, d_model {config.d_model}, {config.n_heads} heads,
  feed-forward {config.d_hidden}; {config.n_components}-component Gaussian-mixture latent of {config.latent_dim};
  NB decoder {config.decoder_layers} layers of {config.decoder_hidden}; {config.n_genes} genes; norm {config.norm}
  after the input projection and in the decoder
- dropped (never used by the released reference code): {dropped}

## Differences from the reference at inference

- Input: `log1p` of the raw counts of the genes in the vocabulary, as the reference (`normalize_total=None`).
- No positional encoding: the released embedder adds the constant 0 in its place.
- The mixture component of a cell is the most likely one. The reference's eval mode draws it with Gumbel
  noise (a hard Gumbel-softmax), so its embeddings change from run to run; scfm's are deterministic.
- Sentences: scfm groups the cells of a sample into sentences of at most `context` = {config.context} cells by a
  seeded hash of the cell names; the reference pipeline reads a whole sample (or chunks of `batch_size` cells in
  file order) as one sentence.
{covariates}
## Reference config (gene_list left out)

```json
{reference}
```
"""


__all__ = [
    "check_reference_config",
    "config_from_reference",
    "convert_cellplm_checkpoint",
    "convert_reference_state_dict",
    "covariate_offsets",
    "read_reference_config",
    "read_reference_state_dict",
    "reference_key_shapes",
    "write_converted_cellplm",
]
