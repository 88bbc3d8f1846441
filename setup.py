"""Builds torch_tfmbs._C with CMake (Ninja) against the installed torch.

Install with `pip install --no-build-isolation -e .` so the build sees the
pinned torch of the environment (build isolation would fetch another).
"""
import glob
import os
import shutil
import subprocess
import sys

import pybind11
import torch.utils
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
BUILD_DIR = os.environ.get("TFMBS_BUILD_DIR", os.path.join(ROOT, "build"))


def cmake_build():
    """Configures once, then builds incrementally; the .so lands in torch_tfmbs/."""
    if not os.path.exists(os.path.join(BUILD_DIR, "build.ninja")):
        prefix = f"{torch.utils.cmake_prefix_path};{pybind11.get_cmake_dir()}"
        subprocess.check_call([
            "cmake", "-S", ROOT, "-B", BUILD_DIR, "-G", "Ninja",
            "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_PREFIX_PATH={prefix}",
            f"-DPython3_EXECUTABLE={sys.executable}",
        ])
    subprocess.check_call(["cmake", "--build", BUILD_DIR, "-j", str(os.cpu_count() or 2)])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        cmake_build()
        built = glob.glob(os.path.join(ROOT, "torch_tfmbs", "_C.*.so"))[0]
        target = self.get_ext_fullpath(ext.name)
        if os.path.abspath(built) != os.path.abspath(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(built, target)


if __name__ == "__main__":
    setup(ext_modules=[Extension("torch_tfmbs._C", sources=[])],
          cmdclass={"build_ext": CMakeBuild})
