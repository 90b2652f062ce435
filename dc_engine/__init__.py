"""dc-engine: Deep Compression (Han, Mao, Dally, ICLR 2016) on a NumPy + Numba engine."""

from .layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from .model import Model
from .store import load, save

__version__ = "0.1.0"

__all__ = ["Model", "Dense", "Conv2D", "MaxPool2D", "ReLU", "Flatten", "Dropout", "load", "save",
           "__version__"]
