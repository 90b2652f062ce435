"""The package's exception types that several modules raise (no heavy imports here)."""


class DCFormatError(ValueError):
    """A model file or an encoded stream is foreign, truncated, corrupt or of an unsupported
    version.

    The message names the file (and the layer and array when relevant) and says what was
    expected, what was found, and how to fix it.
    """


__all__ = ["DCFormatError"]
