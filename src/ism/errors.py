"""Errors the ``ism`` command reports as one line, importable without the heavy modules that raise them."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is left in place."""


class WorkdirBusyError(RuntimeError):
    """Another trainer holds the training workdir's lock (DESIGN D10: one writer per workdir)."""
