#!/usr/bin/env bash
# Build the peer environment with the reference CellPLM package (0.1.0.post2) for the parity and speed scripts.
#   bash benchmarks/peers/setup_cellplm_env.sh        # creates benchmarks/peers/.venv-cellplm
# cellplm is installed without its declared dependencies: pydance (scib, opencv, louvain...), hdf5plugin and
# mygene are never imported by the model and embedding code (mygene only for the online symbol-to-Ensembl
# conversion). What the imports of CellPLM.model and CellPLM.pipeline.cell_embedding need is installed instead:
# einops (CellPLM.layer.performer), torchmetrics (CellPLM.utils.eval) and scanpy (anndata, scikit-learn, scipy,
# pandas, tqdm). torch stays the CPU build through a constraint file. Re-running only checks what is there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${SCFM_PEER_VENV:-$here/.venv-cellplm}"
python_bin=${PYTHON:-python3.11}
command -v "$python_bin" >/dev/null || python_bin=python3
torch_version=${SCFM_TORCH_VERSION:-2.13.0}
cellplm_version=0.1.0.post2

[ -x "$venv/bin/python" ] || "$python_bin" -m venv "$venv"
py="$venv/bin/python"
pip_install() { "$py" -m pip install --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }

"$py" -c "import torch" 2>/dev/null || pip_install "torch==${torch_version}"  # the local wheel: 2.13.0+cpu
installed=$("$py" -W ignore -c "import torch; print(torch.__version__)")
case "$installed" in *+cpu) ;; *) echo "warning: torch ${installed} in $venv is not a +cpu build" >&2 ;; esac
echo "torch==${installed}" > "$venv/torch-constraint.txt"  # nothing below may swap it for another build

check='import importlib.metadata as m, torch, einops, torchmetrics, scanpy, anndata
assert m.version("cellplm") == "'"$cellplm_version"'"
from CellPLM.model import OmicsFormer
from CellPLM.pipeline.cell_embedding import CellEmbeddingPipeline'
if ! "$py" -c "$check" 2>/dev/null; then
  pip_install -c "$venv/torch-constraint.txt" "scanpy>=1.9,<2" "anndata" "scipy" "pandas" "scikit-learn" \
    "einops" "torchmetrics" "tqdm"
  pip_install --no-deps "cellplm==${cellplm_version}"
fi
"$py" -W ignore -c "$check
print('cellplm', m.version('cellplm'), 'ready with torch', torch.__version__, 'scanpy', scanpy.__version__)"
