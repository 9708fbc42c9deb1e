"""The ConvNets the book studies, their data and their clean samples.

``localprops.models`` re-exports the loader API of :mod:`localprops.models.zoo`
(``load``, ``from_module``, ``available``, ...) and the wrappers of
:mod:`localprops.models.wrappers`; :mod:`~localprops.models.data` reads images
and :mod:`~localprops.models.samples` selects the clean samples. A change
here invalidates every cached result.
"""
from localprops.models.wrappers import (
                                        ModelSpec,
                                        ModelUnavailableError,
                                        Normalized,
                                        ResizeCrop,
                                        WeightsIntegrityError,
                                        find_feature_layer,
                                        resolve_device,
)
from localprops.models.zoo import (
                                        ALLOW_DOWNLOAD_ENV,
                                        GTSRB_NAMES,
                                        GTSRB_WEIGHTS_JSON,
                                        IMAGENET_ACCURACY_JSON,
                                        WEIGHTS_DIR,
                                        WEIGHTS_DIR_ENV,
                                        Availability,
                                        accuracy,
                                        available,
                                        from_module,
                                        known_names,
                                        load,
                                        verify_sha256,
                                        weights_dir,
)

__all__ = ["ALLOW_DOWNLOAD_ENV", "GTSRB_NAMES", "GTSRB_WEIGHTS_JSON",
           "IMAGENET_ACCURACY_JSON", "WEIGHTS_DIR", "WEIGHTS_DIR_ENV", "Availability",
           "ModelSpec", "ModelUnavailableError", "Normalized", "ResizeCrop",
           "WeightsIntegrityError", "accuracy", "available", "find_feature_layer",
           "from_module", "known_names", "load", "resolve_device", "verify_sha256",
           "weights_dir"]
