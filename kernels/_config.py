"""Shared Numba settings for every kernel.

``FASTMATH`` is the one place the fast-math flag set is chosen (docs/CONTRIBUTING.md,
"Numba"). It leaves out ``nnan`` and ``ninf`` so that NaN and inf inputs behave as IEEE says;
codecs, index math and anything that must be exact never use it.
"""

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
