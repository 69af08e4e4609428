"""Every error the ``ism`` command reports as one line, in one module that imports nothing heavy.

Each names the offending key, file or value and the fix. The modules that raise them import them from here (and
re-export them under their old homes, e.g. ``ism.config.ConfigError``), so the CLI can catch them all without
importing torch.
"""


class ConfigError(ValueError):
    """A configuration problem, reported as one line naming the key and the fix."""


class DataError(ValueError):
    """A data problem, reported as one line naming the key or file and the fix."""


class EncodeError(ValueError):
    """An encoding or latent-file problem, reported as one line naming the file or value and the fix."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the file named."""


class EvaluateError(DataError):
    """An input of evaluation (samples, reference, weights, statistics) that cannot be used; one line naming it."""


class LaunchError(RuntimeError):
    """The training job failed; the message names the job and its log."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is left in place."""


class WorkdirBusyError(RuntimeError):
    """Another trainer holds the training workdir's lock (DESIGN D10: one writer per workdir)."""


# The errors `ism` prints as one line (exit 1); anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    DataError,
    EncodeError,
    CheckpointError,
    LaunchError,
    NonFiniteLossError,
    WorkdirBusyError,
)


def first_line(err: BaseException) -> str:
    """An exception's first line (a library's multi-line report shortened to its headline), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def one_line(err: BaseException) -> str:
    """An exception's message on one line (whitespace collapsed), or its type's name when it has none."""
    return " ".join(str(err).split()) or type(err).__name__
