"""One exception tree for the core. Adapters map these to HTTP codes / exit codes."""

from __future__ import annotations


class AlLoopError(Exception):
    """Base of every error a user can cause or meet; its message is user-facing."""


class DataFormatError(AlLoopError):
    """Malformed input file; the message names the file and the line."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line


class EmptyInputError(DataFormatError):
    """A file, pool or text that must not be empty is empty."""


class UnknownLabelError(AlLoopError):
    """A label that is not in the project's label schema."""


class SchemaError(AlLoopError):
    """An invalid label schema, or one that does not match a model."""


class AlignmentError(AlLoopError):
    """Spans that cannot be placed on a text (outside it, overlapping, inverted)."""


class EmptyPoolError(AlLoopError):
    """No unlabelled item is left to select from."""


class NotFoundError(AlLoopError):
    """An id (project, round, model version, item) that does not exist."""


class ConflictError(AlLoopError):
    """The request conflicts with current state (e.g. a round is already running)."""


class InvalidTransitionError(ConflictError):
    """A round status change that the state machine does not allow."""


class ConfigError(AlLoopError):
    """An invalid configuration value."""


class ModelLoadError(AlLoopError):
    """A base model or artifact that cannot be loaded."""


class NotExportableError(AlLoopError):
    """A model version that cannot be exported as a standard Hugging Face folder (its kind, or its files)."""
