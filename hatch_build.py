"""Hatch build hook: compile the optional C accelerator ``_streamkit_speedups``.

The extension (src/streamkit/transport/_speedups.c) runs the hot loop of
``LibcurlTransport._drain``. It is built with setuptools' ``build_ext`` (which knows the
platform's compiler and flags) into a temporary directory and added to the wheel as a
top-level module, so it imports the same way from a normal and from an editable install
(where ``streamkit`` itself is found through a .pth entry pointing at src/).

If it cannot be compiled (no compiler, no Python headers) the build prints a warning and
produces the pure-Python wheel: streamkit then uses its Python loop. Set
``STREAMKIT_NO_BUILD_SPEEDUPS=1`` to skip the compilation on purpose.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

MODULE = "_streamkit_speedups"
SOURCE = os.path.join("src", "streamkit", "transport", "_speedups.c")
STUB = os.path.join("src", f"{MODULE}.pyi")


class SpeedupsBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        self._tmp: str | None = None
        if os.environ.get("STREAMKIT_NO_BUILD_SPEEDUPS") == "1":
            self.app.display_info(f"{MODULE}: skipped (STREAMKIT_NO_BUILD_SPEEDUPS=1)")
            return
        self._tmp = tempfile.mkdtemp(prefix="streamkit-speedups-")
        try:
            built = self._compile(self._tmp)
        except BaseException as exc:  # distutils reports some failures with SystemExit
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.app.display_warning(
                f"WARNING: could not compile the optional C accelerator {MODULE} "
                f"({type(exc).__name__}: {exc}); building the pure-Python wheel instead "
                "(same behaviour, slower receive loop)"
            )
            return
        name = os.path.basename(built)
        build_data["force_include"][built] = name
        stub = os.path.join(self.root, STUB)
        if os.path.isfile(stub):
            build_data["force_include"][stub] = f"{MODULE}.pyi"
        # A compiled module makes the wheel specific to this interpreter and platform
        # (hatchling keeps editable wheels py3-none-any; they are never shared anyway).
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        self.app.display_info(f"{MODULE}: compiled {name} ({version} wheel)")

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _compile(self, out: str) -> str:
        from setuptools import Distribution, Extension
        from setuptools.command.build_ext import build_ext

        source = os.path.join(self.root, SOURCE)
        # The interpreter's own compiler flags (sysconfig), optimised builds included.
        extension = Extension(MODULE, sources=[source])
        dist = Distribution({"name": "streamkit-speedups", "ext_modules": [extension]})
        cmd = build_ext(dist)
        cmd.build_lib = out
        cmd.build_temp = os.path.join(out, "tmp")
        cmd.inplace = False
        cmd.ensure_finalized()
        cmd.run()
        built = str(cmd.get_ext_fullpath(MODULE))
        if not os.path.isfile(built):
            raise FileNotFoundError(built)
        return built
