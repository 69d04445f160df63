"""Build hook only (metadata lives in pyproject.toml): copy the top-level `constitutions/`, `prompts/` and
`data/` folders into the wheel as `cai/_shipped/<name>/`, so an installed cai finds them
(`cai.resources.shipped_dir`) while a source checkout keeps editing the top-level folders."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("constitutions", "prompts", "data")


class BuildPyWithShipped(build_py):
    def run(self):
        super().run()
        root = Path(__file__).resolve().parent
        for name in SHIPPED:
            dest = Path(self.build_lib) / "cai" / "_shipped" / name
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(root / name, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))


setup(cmdclass={"build_py": BuildPyWithShipped})
