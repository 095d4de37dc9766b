"""The one exception family driftloop raises on purpose."""


class DriftloopError(Exception):
    """A refusal a user can act on; the message says what came and what to do."""


class ConfigError(DriftloopError):
    """A setting or argument is out of its allowed range or shape."""


class StorageError(DriftloopError):
    """A folder or bucket cannot be read or written as asked."""


class TrackingError(DriftloopError):
    """The MLflow tracking store cannot be reached or refuses a run."""


class InvalidRecord(DriftloopError):
    """One input record fails validation; it is quarantined with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
