"""The one exception type for bad user input (unknown names, bad files, invalid hyper-parameters).

The CLI prints its message as a single line and exits with code 2; library callers can catch it.
"""


class RecBoleRobustError(ValueError):
    """User-facing error whose message names the problem in one line."""


class TrainingDiverged(RuntimeError):
    """A training loss became NaN or infinite; the message names it and the checkpoint kept.

    The CLI prints it as one ``error:`` line and exits with code 1 (not 2: the input was valid).
    """


class Interrupted(KeyboardInterrupt):
    """The run was stopped (Ctrl-C); the message names the last complete checkpoint to ``--resume`` from.

    A ``KeyboardInterrupt``, so callers that catch Ctrl-C still do; the CLI prints it as one ``error:``
    line and exits with code 130, as a shell does for SIGINT.
    """


class OutputFailed(RuntimeError):
    """A file could not be written (the disk is full); the previous file, if any, is kept.

    The CLI prints it as one ``error:`` line and exits with code 1.
    """
