"""Install recbole-robust: ``pip install -e . -c constraints.txt`` (or ``pip install . -c constraints.txt``).

``install_requires`` states the ranges that work, so that adding the plugin to a working RecBole
environment keeps its packages (its torch in particular); ``constraints.txt`` pins the exact set the
tests and CI ran with. README.md ("Dependency pins") says why each bound is needed.
"""
from setuptools import setup

install_requires = [
    "torch>=2.13,<3",  # the oldest torch tested; never let pip pick one itself (it would fetch a CUDA build)
    "recbole==1.2.1",  # the RecBole whose internals the plugin hooks into (checked at import)
    "ray[tune]>=2.5,<=2.6.3",  # RecBole 1.2.1 pins ray<=2.6.3
    "numpy>=1.24,<2",  # Ray 2.6.3 uses np.bool8, removed in numpy 2
    "pandas>=2.0,<2.3",  # pandas >= 2.3 needs numpy 2
    "scipy>=1.10,<1.13",  # RecBole's LightGCN, NGCF... call dok_matrix._update, removed in scipy 1.13
    "pyarrow>=12,<18",  # pyarrow >= 18 needs numpy 2; Ray 2.6.3 imports it
    "setuptools>=70,<81",  # Ray 2.6.3 imports pkg_resources, removed in setuptools 81
    "torch_geometric>=2.4,<3",
    "pytorch-optimizer>=4.1,<5",  # SAM / ASAM perturbations (sharpness: sam | asam); 4.x keeps w in state 'old_p'
    "hyperopt>=0.2.7,<0.3",  # model-based search for Ray Tune (ray.tune.search.hyperopt)
    "filelock>=3.12",  # the build cache's lock
    "scikit-learn>=1.3",
    "matplotlib>=3.8",
    "pyyaml>=6.0",
    "tabulate>=0.9",
]

setup(
    name="recbole-robust",
    version="0.1.0",
    description="Robust and multimodal recommendation for RecBole: adversarial training, "
    "Mirror Gradient, robustness evaluation, Ray Tune search",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    py_modules=["recbole_robust_cli"],  # the command line, importable without importing the package (fast --help)
    packages=[
        "recbole_robust",
        "recbole_robust.data",
        "recbole_robust.model",
        "recbole_robust.model.general_recommender",
        "recbole_robust.perturb",
        "recbole_robust.trainer",
        "recbole_robust.robustness",
        "recbole_robust.robustness.analyses",
        "recbole_robust.properties",
        "recbole_robust.dataset_configs",
    ],
    # properties/ and dataset_configs/ live at the top level (the product layout) and ship inside the
    # package so that a wheel install finds them through importlib.resources.
    package_dir={
        "recbole_robust": "recbole_robust",
        "recbole_robust.properties": "properties",
        "recbole_robust.dataset_configs": "dataset_configs",
    },
    package_data={
        "recbole_robust.properties": ["*.yaml", "model/*.yaml", "presets/*.yaml", "presets/*/*.yaml", "search/*.yaml"],
        "recbole_robust.dataset_configs": ["*.yaml"],
    },
    install_requires=install_requires,
    extras_require={"test": ["pytest>=7", "pytest-xdist>=3.5"]},
    entry_points={"console_scripts": ["recbole-robust=recbole_robust_cli:main"]},
)
