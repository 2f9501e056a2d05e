"""Why a model cannot be named, loaded or run (one-line messages that say what to do)."""

from __future__ import annotations


class ModelSpecError(ValueError):
    """A model metadata file is invalid (the message names the file)."""


class UnknownModelError(KeyError):
    """No metadata file for this model name."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown model {self.name!r} - run 'mliapdb models' to list them"


class ModelUnavailableError(RuntimeError):
    """The model cannot run here: a package or its checkpoint is missing (one-line message
    that says what to do)."""


class CheckpointError(ModelUnavailableError):
    """The checkpoint of a model is missing or does not match its recorded sha256."""


class PackageMissingError(ModelUnavailableError):
    """A distribution the model needs is not installed."""

