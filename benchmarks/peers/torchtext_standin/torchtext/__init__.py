"""Pure-Python stand-in for the parts of torchtext that the reference scGPT package imports.

torchtext's compiled extension is not built for current PyTorch releases; scGPT 0.2.4 only needs
``torchtext.vocab.Vocab`` and ``torchtext.vocab.vocab``. This package is installed into the peer
environment of ``benchmarks/peers`` only; scfm itself never imports it.
"""

from . import vocab

__version__ = "0.0.0+scfm-standin"
__all__ = ["vocab"]
