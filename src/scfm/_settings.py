"""``scfm.settings``: verbosity and progress bars, following scanpy's verbosity unless set.

scfm's modules log with ``logging.getLogger(__name__)`` under the ``"scfm"`` logger. Its level follows
``sc.settings.verbosity`` (scanpy's 0 error, 1 warning, 2 info, 3 hint, 4 debug) unless
``scfm.settings.verbosity`` is set. Messages go to stderr like scanpy's, unless the application configured
logging itself (handlers on the root logger), which then receives them.

Progress bars (cell streaming, CellPLM sentences, training) show when the call asks for them (``progress=True``,
the default of the tools) and the settings allow them: ``scfm.settings.progress_bar`` ``True``/``False`` switches
them on/off everywhere; ``None`` (default) shows them unless the verbosity is 0 (errors only).

Training inside the tools (``tl.integrate``, ``tl.annotate`` fine-tuning) and ``model.train`` keeps Lightning's
banners (GPU available, model summary) quiet below verbosity 3 (hint).

Examples
--------
>>> import scfm
>>> scfm.settings.progress_bar = False  # no progress bars anywhere
>>> scfm.settings.verbosity = "info"  # scfm's info messages, whatever scanpy's verbosity
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

LOGGER_NAME = "scfm"
VERBOSITY_NAMES = {"error": 0, "warning": 1, "info": 2, "hint": 3, "debug": 4}
_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: 15, 4: logging.DEBUG}
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning")


class _UnlessRootHandles(logging.Filter):
    """Pass records only while the root logger has no handler (otherwise the application's logging prints them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not logging.getLogger().handlers


class Settings:
    """Global settings of scfm (``scfm.settings``)."""

    def __init__(self) -> None:
        self._verbosity: int | None = None
        self._progress_bar: bool | None = None

    def __repr__(self) -> str:
        return f"scfm.settings(verbosity={self.verbosity}, progress_bar={self.progress_bar})"

    @property
    def verbosity(self) -> int:
        """0 error, 1 warning, 2 info, 3 hint, 4 debug (set an int or name; ``None`` follows scanpy's verbosity)."""
        if self._verbosity is not None:
            return self._verbosity
        import scanpy as sc

        return int(sc.settings.verbosity)

    @verbosity.setter
    def verbosity(self, value: int | str | None) -> None:
        if isinstance(value, str):
            if value not in VERBOSITY_NAMES:
                raise ValueError(f"verbosity must be one of {list(VERBOSITY_NAMES)} or 0-4, got {value!r}")
            value = VERBOSITY_NAMES[value]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 4):
            raise ValueError(f"verbosity must be an int 0-4, a name {list(VERBOSITY_NAMES)} or None, got {value!r}")
        self._verbosity = value
        self.sync_logging()

    @property
    def progress_bar(self) -> bool | None:
        """``True``/``False``: progress bars on/off everywhere; ``None``: on unless the verbosity is 0."""
        return self._progress_bar

    @progress_bar.setter
    def progress_bar(self, value: bool | None) -> None:
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"progress_bar must be True, False or None, got {value!r}")
        self._progress_bar = value

    def show_progress(self, requested: bool = True) -> bool:
        """Whether a progress bar the caller ``requested`` is shown under the current settings."""
        self.sync_logging()
        if not requested:
            return False
        if self._progress_bar is not None:
            return self._progress_bar
        return self.verbosity >= 1

    def log_level(self) -> int:
        """Return the :mod:`logging` level of the current verbosity."""
        return _LEVELS[self.verbosity]

    def sync_logging(self) -> None:
        """Set the ``"scfm"`` logger's level from the current verbosity (scanpy's may have changed)."""
        logger = logging.getLogger(LOGGER_NAME)
        level = self.log_level()
        if logger.level != level:
            logger.setLevel(level)

    @contextlib.contextmanager
    def quiet_lightning(self) -> Iterator[None]:
        """Silence Lightning's info banners inside the block, below verbosity 3 (hint)."""
        if self.verbosity >= 3:
            yield
            return
        loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _install_handler() -> None:
    logger = logging.getLogger(LOGGER_NAME)
    if not any(getattr(handler, "_scfm", False) for handler in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(_UnlessRootHandles())
        handler._scfm = True
        logger.addHandler(handler)


settings = Settings()
_install_handler()
