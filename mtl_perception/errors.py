"""Errors that carry a message meant for the user (printed without a traceback by the CLI)."""


class UserError(Exception):
    """Bad input, missing file, unusable environment: one clear sentence, no traceback."""
