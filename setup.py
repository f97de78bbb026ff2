"""Builds the optional C core of the output path; everything else is in pyproject.toml.

The extension is optional: without a C compiler (or with ``SUPD_PURE_PYTHON=1`` at build time) the install
still succeeds and supd runs the pure-Python implementation (see supervisor/_daemon/output/core.py).
"""

import os

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("SUPD_PURE_PYTHON") != "1":
    ext_modules.append(
        Extension(
            "supervisor._daemon.output._native",
            ["supervisor/_daemon/output/_native.c"],
            extra_compile_args=["-O3", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    )

setup(ext_modules=ext_modules)
