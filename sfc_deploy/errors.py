"""Typed errors. The CLI turns any :class:`SfcError` into one line on stderr and exit code 2.

Every message says what was received, what was expected, and how to fix it.
"""

from __future__ import annotations


class SfcError(Exception):
    """Base class of every user-facing error in sfc-deploy."""


class ConfigError(SfcError):
    """An option or config value that does not apply."""


class UnknownBackboneError(SfcError, KeyError):
    """A backbone name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CheckpointError(SfcError):
    """A checkpoint that cannot be loaded onto the requested model."""


class VideoError(SfcError):
    """A video that is missing, corrupt or too short."""


class ArtifactError(SfcError):
    """An exported artifact that does not match its manifest."""


class BackendUnavailableError(SfcError):
    """An optional backend (TensorRT, CUDA, ...) that is not installed on this machine."""
