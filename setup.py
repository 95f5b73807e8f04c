"""Install recbole-robust: ``pip install -e .`` (or ``pip install .``).

The pins below are the one place the dependency set is fixed; README.md ("Dependency pins") says why
each one is needed. ``torch==2.13.0`` is exact on purpose: an unpinned torch makes pip download the
newest CUDA build (several GB) instead of the local CPU wheel.
"""
from setuptools import setup

install_requires = [
    "torch==2.13.0",
    "recbole==1.2.1",
    "ray[tune]==2.6.3",  # RecBole 1.2.1 pins ray<=2.6.3
    "numpy==1.26.4",  # Ray 2.6.3 uses np.bool8, removed in numpy 2
    "pandas==2.2.3",  # pandas >= 2.3 / 3 need numpy 2
    "scipy==1.12.0",  # RecBole's LightGCN, NGCF... call dok_matrix._update, removed in scipy 1.13
    "pyarrow==17.0.0",  # pyarrow >= 18 needs numpy 2; Ray 2.6.3 imports it
    "setuptools>=70,<81",  # Ray 2.6.3 imports pkg_resources, removed in setuptools 81
    "torch_geometric==2.8.1",
    "hyperopt==0.2.7",  # model-based search for Ray Tune (ray.tune.search.hyperopt)
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
    packages=[
        "recbole_robust",
        "recbole_robust.data",
        "recbole_robust.model",
        "recbole_robust.model.general_recommender",
        "recbole_robust.trainer",
        "recbole_robust.robustness",
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
        "recbole_robust.properties": ["*.yaml", "model/*.yaml", "presets/*.yaml", "search/*.yaml"],
        "recbole_robust.dataset_configs": ["*.yaml"],
    },
    install_requires=install_requires,
    extras_require={"test": ["pytest>=7"]},
    entry_points={"console_scripts": ["recbole-robust=recbole_robust.cli:main"]},
)
