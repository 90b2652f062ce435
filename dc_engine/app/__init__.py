"""The application: the ``dc-engine`` command line and what it needs around the library.

- :mod:`.cli`: argument parsing and printing, nothing else;
- :mod:`.jobs`: each command as a file-to-file function (load, call the library, save,
  write reports);
- :mod:`.report`: text tables of the reports;
- :mod:`.plots`: the figures (matplotlib, the ``plot`` extra).
"""
