"""Files and data: dense model files, compressed model files, their HDF5 plumbing, and
datasets.

- :mod:`.dense`: dense model files (float arrays, masks, shared weights);
- :mod:`.compressed`: the compressed file's container (payload bytes per layer);
- :mod:`._h5`: atomic writes and checked reads both file kinds share;
- :mod:`.data`: IDX datasets (MNIST and look-alikes) and the validation split.

The only package that imports h5py. ``dc_engine.load`` / ``save`` (:mod:`dc_engine.runtime`)
read and write either kind as a model.
"""
