"""Named errors: each message says what failed, where, and by how much."""


class CtloopError(Exception):
    """Base class: a user-facing error whose message is one clear line."""


class ConfigError(CtloopError):
    """The configuration is invalid (names the file and the field)."""


class LakeNotLocal(ConfigError):
    """A local-only operation was asked of a lake that lives under a remote URL."""


class InputError(CtloopError):
    """An input file or request cannot be used (names the file, row or field)."""


class BatchRejected(CtloopError):
    """A batch failed a blocking validation check; it has been or will be quarantined."""

    def __init__(self, source: str, reasons: list[dict]):
        self.source = source
        self.reasons = reasons
        first = reasons[0]["message"] if reasons else "rejected"
        more = f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else ""
        super().__init__(f"{source}: {first}{more}")


class NoChampion(CtloopError):
    """An operation needs a serving model and none is registered yet."""


class NotEnoughData(CtloopError):
    """The lake holds too little accepted data for the requested operation."""


class StoreUnavailable(CtloopError):
    """A store (the model registry, the tracking server) cannot be read or written: an outage,
    not an answer. Nothing may be decided from it (an unreadable champion is not "no
    champion")."""


class ArtifactTampered(CtloopError):
    """A model version's files differ from the digest recorded when it was registered, or its
    metadata points outside its own folder."""
