"""fmnist: the Fashion-MNIST model study as a library (models, augmentations, trainer, reports)."""

__version__ = "0.2.0"
