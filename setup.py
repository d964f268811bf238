"""hvdagent: synchronous data-parallel Keras training on Horovod, in one line.

Horovod itself is not listed in ``install_requires``: it must be compiled
against the installed TensorFlow (``bash ci/setup.sh`` does that and caches the
wheel). ``import hvdagent`` works without it; the first call that needs
Horovod says what is missing.
"""

import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _version():
    scope = {}
    with open(os.path.join(HERE, "hvdagent", "_version.py")) as f:
        exec(f.read(), scope)
    return scope["__version__"]


with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    LONG_DESCRIPTION = f.read()

setup(
    name="hvdagent",
    version=_version(),
    description="Horovod-backed Keras plugin: one-line synchronous data-parallel training "
    "for Keras 3 and Keras 2 (tf_keras)",
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    # The top-level callbacks/ folder is installed as hvdagent.callbacks: a
    # top-level package named `callbacks` would collide with users' code.
    packages=["hvdagent", "hvdagent.callbacks"],
    package_dir={"hvdagent": "hvdagent", "hvdagent.callbacks": "callbacks"},
    package_data={"hvdagent": ["py.typed"]},
    install_requires=["numpy", "packaging", "cloudpickle", "psutil"],
    extras_require={
        "tf": ["tensorflow>=2.16", "keras>=3.0"],
        "keras2": ["tf-keras"],
        "test": ["pytest>=7", "pytest-timeout", "scikit-learn", "h5py", "tensorboard", "matplotlib", "psutil"],
        "notebooks": ["nbclient", "nbformat", "ipykernel", "matplotlib", "scikit-learn"],
    },
    entry_points={"console_scripts": ["hvdagent=hvdagent.__main__:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
