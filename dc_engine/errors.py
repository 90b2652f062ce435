"""The exception types of the package (one home; no heavy imports here).

Every message says what was expected, what was found, and how to fix it, on one line: a path or
value that holds a newline or control characters is shown escaped (``str(error)`` escapes them).
"""


def one_line(text: str) -> str:
    """``text`` with every non-printable character (a newline too) shown as its Python escape
    (``\\n``, ``\\x1b``, ``\\udcff``): what a message that must stay on one line prints."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace")
                   .decode("ascii") for c in text)


class _OneLine(ValueError):
    """A ValueError whose text is one line (:func:`one_line`)."""

    def __str__(self) -> str:
        return one_line(super().__str__())


class DCFormatError(_OneLine):
    """A model file or an encoded stream is foreign, truncated, corrupt or of an unsupported
    version.

    The message names the file (and the layer and array when relevant) and says what was
    expected, what was found, and how to fix it.
    """


class ConfigError(_OneLine):
    """A settings file that cannot be read, or settings that do not fit the model."""


class DatasetError(_OneLine):
    """A data file or folder is missing, truncated, corrupt or inconsistent."""


__all__ = ["DCFormatError", "ConfigError", "DatasetError", "one_line"]
