"""Errors the ``ism`` command reports as one line, importable without the heavy modules that raise them."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is left in place."""
