"""Errors a user can cause. launch.py prints them as one line, without a traceback."""


class UserError(Exception):
    """A mistake in the user's input (config, path, checkpoint, flag); the message says what and how to fix it."""


class ConfigError(UserError):
    """A config value that is unknown, of the wrong type, missing or invalid."""


class CheckpointError(UserError):
    """A checkpoint or weight file that cannot be used."""


class ModelNotFoundError(UserError):
    """A pretrained model that cannot be found locally (and cannot be downloaded)."""
