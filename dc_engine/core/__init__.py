"""The training core: layers, the model, losses, the optimizer and the training loop.

- :mod:`.layers`, :mod:`.model`: inference and backward; a weight is a float array or a
  compressed back end, and one :class:`~dc_engine.core.model.Model` runs both;
- :mod:`.ties`: parameters computed from other arrays (weight sharing's codebook);
- :mod:`.losses`, :mod:`.optim`, :mod:`.train`: training (not needed to run a model);
- :mod:`.zoo`: the paper's MNIST networks and their training recipes.

Importing this package imports nothing; import the modules.
"""
