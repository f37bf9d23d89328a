#!/usr/bin/env bash
# Build the peer environment for the tGPT parity script: Hugging Face transformers (GPT2LMHeadModel,
# PreTrainedTokenizerFast) and tokenizers, the code the reference tGPT README runs.
#   bash benchmarks/peers/setup_tgpt_env.sh            # creates benchmarks/peers/.venv-tgpt
# torch stays the CPU build through a constraint file. Re-running only checks what is there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${SCFM_PEER_VENV:-$here/.venv-tgpt}"
python_bin=${PYTHON:-python3.11}
command -v "$python_bin" >/dev/null || python_bin=python3
torch_version=${SCFM_TORCH_VERSION:-2.13.0}
transformers_version=${SCFM_TRANSFORMERS_VERSION:-4.46.3}

[ -x "$venv/bin/python" ] || "$python_bin" -m venv "$venv"
py="$venv/bin/python"
pip_install() { "$py" -m pip install --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }

"$py" -c "import torch" 2>/dev/null || pip_install "torch==${torch_version}"
installed=$("$py" -W ignore -c "import torch; print(torch.__version__)")
echo "torch==${installed}" > "$venv/torch-constraint.txt"

check='import importlib.metadata as m, torch, transformers, tokenizers, numpy
assert m.version("transformers") == "'"$transformers_version"'"
from transformers import GPT2LMHeadModel, GPT2Config, PreTrainedTokenizerFast'
if ! "$py" -c "$check" 2>/dev/null; then
  pip_install -c "$venv/torch-constraint.txt" "transformers==${transformers_version}" numpy
fi
"$py" -W ignore -c "$check
print('transformers', transformers.__version__, 'tokenizers', tokenizers.__version__, 'ready with torch', torch.__version__)"
