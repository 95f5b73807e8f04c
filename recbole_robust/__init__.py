"""recbole-robust: robust and multimodal recommendation for RecBole.

Importing the package registers its models, trainers and datasets with RecBole (``registry.py``), so
``recbole.quick_start.run_recbole(model="VBPR", ...)`` works in any RecBole project.
"""
import warnings

# Known, harmless warnings of the pinned stack that would otherwise fill every RecBole log:
# pandas 2.2 about RecBole's inplace fillna, torch about RecBole's torch.cuda.amp calls, Ray 2.6.3
# about pkg_resources, torch about CSR tensors being "beta" (the graph models' fixed graphs are CSR).
warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")
warnings.filterwarnings("ignore", message=r".*pkg_resources is deprecated.*", category=UserWarning)
warnings.filterwarnings("ignore", message=r"Sparse CSR tensor support is in beta state", category=UserWarning)

from recbole_robust.errors import RecBoleRobustError  # noqa: E402
from recbole_robust.registry import register  # noqa: E402

register()

from recbole_robust.quick_start import run_recbole_robust  # noqa: E402
from recbole_robust.tune import tune  # noqa: E402  (Ray is imported only when a search runs)

__version__ = "0.1.0"
__all__ = ["RecBoleRobustError", "run_recbole_robust", "tune", "__version__"]
