#!/usr/bin/env bash
# Build the peer environment with the reference scGPT package (0.2.4) for the parity and speed scripts.
#   bash benchmarks/peers/setup_scgpt_env.sh          # creates benchmarks/peers/.venv-scgpt
# scgpt is installed without its dependencies (they pin old scvi-tools, torchtext, flash-attn...); only what
# its import and its embedding code need is installed, plus a pure-Python stand-in for torchtext.vocab.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${SCFM_PEER_VENV:-$here/.venv-scgpt}"
python_bin=${PYTHON:-python3}
torch_version=${SCFM_TORCH_VERSION:-2.13.0}

[ -x "$venv/bin/python" ] || "$python_bin" -m venv "$venv"
pip_install() { "$venv/bin/python" -m pip install --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }

"$venv/bin/python" -c "import torch" 2>/dev/null || pip_install "torch==${torch_version}" || pip_install torch
installed=$("$venv/bin/python" -c "import torch; print(torch.__version__)")
echo "torch==${installed}" > "$venv/torch-constraint.txt"
pip_install -c "$venv/torch-constraint.txt" "scanpy>=1.9,<2" "anndata" "scipy" "pandas" "scikit-learn" "numba" \
  "matplotlib" "ipython" "tqdm" "typing_extensions" "datasets>=2.3,<3" "psutil"
pip_install --no-deps "scgpt==0.2.4"
pip_install --no-deps "$here/torchtext_standin"
"$venv/bin/python" -c "import scgpt, torchtext; from scgpt.tasks import embed_data; print('scgpt', scgpt.__version__, 'ready with torchtext', torchtext.__version__)"
