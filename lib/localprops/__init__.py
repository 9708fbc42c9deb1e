"""localprops: local properties of ConvNets around clean images.

The engine behind the executable book that reproduces and extends Aghdam,
Heravi, Puig, "Explaining Adversarial Examples by Local Properties of
Convolutional Neural Networks" (VISAPP 2017). Every computation the book shows
lives here; the notebooks import it and explain it.

Conventions used throughout: images are float tensors (N, 3, H, W) in raw
pixel units [0, 255]; a radius ``r`` is measured in those units, in the L2 or
L-infinity norm (``norm="l2"`` / ``"linf"``); ``T`` perturbations per radius.
"""
__version__ = "0.1.0"
