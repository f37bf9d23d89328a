#!/usr/bin/env bash
# Create .venv and install scfm into it.
#   bash scripts/setup.sh        # the package (compiled bytecode, for running scfm)
#   bash scripts/setup.sh dev    # editable install + test and evaluation extras
# torch is installed first and pinned, so that resolving the other dependencies never swaps it: on machines
# that hold a local CPU wheel of torch (pip's find-links), that wheel is used; elsewhere the standard index.
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin=${PYTHON:-python3}
torch_version=${SCFM_TORCH_VERSION:-2.13.0}

[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
pip_install() { .venv/bin/python -m pip install --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  pip_install "torch==${torch_version}" || pip_install torch
fi
installed=$(.venv/bin/python -c "import torch; print(torch.__version__)" 2>/dev/null)
echo "torch==${installed}" > .venv/torch-constraint.txt

if [ "${1:-}" = "dev" ]; then
  pip_install -c .venv/torch-constraint.txt -e ".[dev]"
  .venv/bin/python -m compileall -q src/scfm > /dev/null
else
  pip_install -c .venv/torch-constraint.txt ".[eval]"
fi
echo "scfm installed in .venv (torch ${installed})"
