"""The one exception type for bad user input (unknown names, bad files, invalid hyper-parameters).

The CLI prints its message as a single line and exits with code 2; library callers can catch it.
"""


class RecBoleRobustError(ValueError):
    """User-facing error whose message names the problem in one line."""


class TrainingDiverged(RuntimeError):
    """A training loss became NaN or infinite; the message names it and the checkpoint kept.

    The CLI prints it as one ``error:`` line and exits with code 1 (not 2: the input was valid).
    """
