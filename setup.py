"""A thin shim over pyproject.toml, which holds every packaging setting.

It is here for tools and workflows that still call ``setup.py`` (``python
setup.py --version``, editable installs by old pips); ``pip install .`` does
not need it.
"""

from setuptools import setup

setup()
