"""One exception family; the CLI turns these into one-line user messages."""

from __future__ import annotations


class EdgeclsError(Exception):
    """Base class for every error edgecls raises on purpose (bad input, missing extra, failed check)."""


class ConfigError(EdgeclsError):
    """A configuration value or command-line option is invalid."""


class DataError(EdgeclsError):
    """A dataset, label file or image cannot be used; the message names the file (and line)."""


class MissingDependency(EdgeclsError):
    """An optional dependency is not installed; the message gives the exact pip command."""


class UnsupportedOption(EdgeclsError):
    """An option is not supported by the chosen target, backend or device."""


class ParityError(EdgeclsError):
    """An exported artifact does not agree with the reference model within its budget."""


class CheckpointError(EdgeclsError):
    """A checkpoint or run directory is missing, corrupt or incompatible."""


class TrainingDiverged(EdgeclsError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class IntegrityError(ConfigError):
    """A bundle file lies outside the bundle or its bytes differ from the sha256 its manifest records."""
