"""rdmm_pipelines: region-specific diffeomorphic metric mapping (RDMM), LDDMM and vSVF on PyTorch.

The library is pure PyTorch + nibabel; pydra tasks and workflows live in
``rdmm_pipelines.interfaces`` and ``rdmm_pipelines.workflows``. One call::

    from rdmm_pipelines import register
    result = register("fixed.nii.gz", "moving.nii.gz", model="rdmm")
    result.save("out/")
"""

__version__ = "0.1.0"

from .huge_pages import request_huge_pages  # noqa: E402

request_huge_pages()  # before torch's first CPU allocation: large tensors on huge pages

from .config import (  # noqa: E402
    IntegratorConfig,
    KernelConfig,
    OptimizerConfig,
    RegionalConfig,
    RegistrationConfig,
    SimilarityConfig,
)
from .optim.initial import InitialConditions  # noqa: E402
from .presets import PRESETS, get_preset  # noqa: E402
from .registration import register  # noqa: E402
from .result import RegistrationResult  # noqa: E402
from .spatial import Grid, Image, load_image, load_labels, save_image  # noqa: E402

__all__ = [
    "register",
    "RegistrationResult",
    "RegistrationConfig",
    "KernelConfig",
    "RegionalConfig",
    "IntegratorConfig",
    "SimilarityConfig",
    "OptimizerConfig",
    "InitialConditions",
    "PRESETS",
    "get_preset",
    "Grid",
    "Image",
    "load_image",
    "load_labels",
    "save_image",
    "__version__",
]
