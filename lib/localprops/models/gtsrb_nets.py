"""The two GTSRB ConvNets of the paper, re-implemented in PyTorch.

Aghdam, Heravi, Puig (VISAPP 2017) study two traffic-sign ConvNets besides
the ImageNet models: one column of Ciresan, Meier, Schmidhuber (CVPR 2012,
"Multi-column deep neural networks for image classification") and the
Leaky-ReLU ConvNet of Aghdam, Heravi, Puig (Robot 2015, "Recognizing traffic
signs using a practical deep neural network"). Neither set of trained
weights was published, so both nets are trained here
(``python -m localprops.tools.train_gtsrb``) on the 32x32 GTSRB data of the book.

Both classes below take *normalised* images (N, 3, 32, 32); the wrapper
:class:`localprops.models.Normalized` puts them on the book's [0, 255] scale
(``localprops.models.load("gtsrb-ciresan")`` returns the wrapped net).

``gtsrb-ciresan`` (:class:`CiresanNet`)
    One column of the multi-column DNN: input 48x48x3; conv 100 maps 7x7;
    max-pool 2x2; conv 150 maps 4x4; max-pool 2x2; conv 250 maps 4x4;
    max-pool 2x2; fully connected 300; fully connected 43. 1,543,443
    parameters, as in the original.

``gtsrb-aghdam`` (:class:`AghdamNet`)
    A compact Leaky-ReLU ConvNet after Aghdam et al. 2015. What their
    publication documents, and we keep: 48x48 colour input (as Ciresan's),
    three convolution / max-pooling stages, a fully connected hidden layer
    with dropout before the 43-way classifier, Leaky ReLU activations
    everywhere, and 27 % fewer parameters than one Ciresan column (22 % fewer
    than Sermanet and LeCun's net). **Assumed** (the layer sizes could not be
    confirmed from a source available to us): conv 70 maps 7x7; max-pool 2;
    conv 110 maps 4x4; max-pool 2; conv 180 maps 4x4; max-pool 2; fully
    connected 400; dropout 0.5; fully connected 43; Leaky-ReLU slope 0.01.
    That gives 1,116,293 parameters, 27.7 % fewer than Ciresan's 1,543,443,
    and about 70 million multiply-adds per image against Ciresan's 126
    million. Read it as "a Leaky-ReLU ConvNet of the documented size", not
    as the authors' exact net.

Deviations from the originals, shared by both nets
    * Input: the originals take 48x48 crops of the sign. The book's data
      are 32x32 whole images (the sign plus its ~10 % border), so each net
      starts with a fixed bilinear upsampling 32x32 -> 48x48
      (``self.upsample``). We chose this over shrinking the kernels or
      padding because it keeps every layer, feature-map size and parameter
      count of the original, and every local property the book measures
      is then that of the original topology. The upsampling is linear and
      fixed (no weights); it is part of the function under study, which the
      book states when it measures perturbations on the 32x32 input.
    * Preprocessing: the original columns were trained on contrast-
      normalised variants of the images (Ciresan: imadjust, histeq,
      adapthisteq, conorm, one column each, plus one on the raw images).
      We train on the raw images with a fixed per-channel mean / std
      normalisation (inside the wrapper) and brightness / contrast
      augmentation instead.
    * Activation of the Ciresan column: the scaled hyperbolic tangent
      1.7159 tanh(2x/3) (LeCun's), which is what "tanh" meant in that line
      of work; the paper itself only says "hyperbolic tangent".
    * Training: AdamW (lr 1e-3, weight decay 1e-4, batch 64), linear
      warm-up then cosine learning-rate decay, small random affine and
      brightness / contrast augmentation, few epochs on a 2-core CPU
      (Ciresan 8, Aghdam 14), instead of the originals' long SGD runs. No
      label smoothing: the book keeps samples classified with more than
      99 % confidence, which label smoothing would make rare. The training
      set is every 2nd frame of the official one (19,605 images), 10 % of
      the tracks of every class held out for validation.
      ``weights/gtsrb_weights.json`` records the exact commands.
    * Initialisation: PyTorch defaults.

Accuracy on the full official test set (12,630 images): gtsrb-ciresan
97.85 %, gtsrb-aghdam 97.78 % (the originals report about 98.5-99.5 % per
net; the gap comes from the short CPU training and the half-size training
set).
"""
from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from localprops.core.cache import code_digest
from localprops.models.gtsrb_families import FAMILIES

#: Input side of the original nets (the 32x32 images are upsampled to it).
ORIGINAL_SIZE = 48
#: Side of the book's GTSRB images.
INPUT_SIZE = 32
NUM_CLASSES = 43


class ScaledTanh(nn.Module):
    """LeCun's scaled hyperbolic tangent ``1.7159 * tanh(2 x / 3)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class _ThreeStageNet(nn.Module):
    """Upsample to 48x48, three conv + max-pool stages, one hidden FC layer.

    Parameters
    ----------
    maps : number of feature maps of the three convolution layers.
    kernels : their kernel sides.
    hidden : width of the hidden fully connected layer.
    activation : factory for the activation module.
    dropout : dropout rate before the classifier (0 for none).
    num_classes : number of output logits.
    """

    def __init__(self, maps: tuple[int, int, int], kernels: tuple[int, int, int],
                 hidden: int, activation: Callable[[], nn.Module],
                 dropout: float = 0.0, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.upsample = nn.Upsample(size=(ORIGINAL_SIZE, ORIGINAL_SIZE),
                                    mode="bilinear", align_corners=False)
        layers: list[nn.Module] = []
        channels, side = 3, ORIGINAL_SIZE
        for width, kernel in zip(maps, kernels):
            layers += [nn.Conv2d(channels, width, kernel), activation(),
                       nn.MaxPool2d(2)]
            channels, side = width, (side - kernel + 1) // 2
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten(),
                                 nn.Linear(channels * side * side, hidden),
                                 activation()]
        if dropout:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(hidden, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 43) of normalised images (N, 3, 32, 32)."""
        return self.classifier(self.features(self.upsample(x)))


class CiresanNet(_ThreeStageNet):
    """One column of Ciresan et al. 2012 (scaled tanh), 32x32 input.

    ``classifier.2`` is the activation of the 300-unit hidden layer: the
    layer just before the classifier, whose output the book studies.
    """

    FEATURE_LAYER = "classifier.2"
    #: Layers with weights on the path from input to output (3 conv + 2 FC).
    DEPTH = 5

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(maps=(100, 150, 250), kernels=(7, 4, 4), hidden=300,
                         activation=ScaledTanh, dropout=0.0,
                         num_classes=num_classes)


def _leaky_relu() -> nn.Module:
    return nn.LeakyReLU(0.01)


class AghdamNet(_ThreeStageNet):
    """Compact Leaky-ReLU ConvNet after Aghdam et al. 2015, 32x32 input.

    Layer sizes are assumptions (see the module docstring).
    ``classifier.2`` is the Leaky ReLU of the 400-unit hidden layer (dropout,
    the identity in eval mode, follows it).
    """

    FEATURE_LAYER = "classifier.2"
    #: Layers with weights on the path from input to output (3 conv + 2 FC).
    DEPTH = 5

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(maps=(70, 110, 180), kernels=(7, 4, 4), hidden=400,
                         activation=_leaky_relu, dropout=0.5,
                         num_classes=num_classes)


class CiresanNoiseNet(CiresanNet):
    """The Ciresan column again, trained with Gaussian-noise augmentation.

    The same architecture as :class:`CiresanNet`; only its training differs
    (``--noise-sigma``, see ``weights/gtsrb_weights.json``). The book's
    Fourier chapter uses it as an intervention: does noise augmentation move
    a net's sensitivity from high to low frequencies (Yin et al. 2019)?
    """


#: Model name -> class, for the loader and the training script: the paper's
#: two GTSRB nets, the noise-augmented Ciresan column (an intervention, not a
#: net of the paper), then the four ImageNet families trained on GTSRB
#: (:mod:`localprops.models.gtsrb_families`).
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "gtsrb-ciresan": CiresanNet,
    "gtsrb-aghdam": AghdamNet,
    "gtsrb-ciresan-noise": CiresanNoiseNet,
    **FAMILIES,
}


def build(name: str) -> nn.Module:
    """A freshly initialised GTSRB net by name (a key of :data:`ARCHITECTURES`)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown GTSRB net {name!r}; known: "
                         f"{sorted(ARCHITECTURES)}")
    return ARCHITECTURES[name]()


def definition_version(name: str) -> str | None:
    """A short hash of the code that defines GTSRB net ``name``; None for other models.

    The modules that define the book's own nets are left out of the code
    version shared by every cached result
    (:data:`localprops.core.cache.DEFINITION_MODULES`); this hash keys the
    units of the nets they define instead: this module (the registry and the
    paper's nets) and the module of the net's class, docstrings and comments
    excluded.
    """
    cls = ARCHITECTURES.get(name)
    if cls is None:
        return None
    files = dict.fromkeys([Path(__file__).resolve(),
                           Path(inspect.getfile(cls)).resolve()])
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(code_digest(path))
    return digest.hexdigest()[:12]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
