"""The exception types of the package (one home; no heavy imports here).

Every message says what was expected, what was found, and how to fix it.
"""


class DCFormatError(ValueError):
    """A model file or an encoded stream is foreign, truncated, corrupt or of an unsupported
    version.

    The message names the file (and the layer and array when relevant) and says what was
    expected, what was found, and how to fix it.
    """


class ConfigError(ValueError):
    """A settings file that cannot be read, or settings that do not fit the model."""


class DatasetError(ValueError):
    """A data file or folder is missing, truncated, corrupt or inconsistent."""


__all__ = ["DCFormatError", "ConfigError", "DatasetError"]
