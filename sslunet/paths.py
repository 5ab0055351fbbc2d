"""The standard folder layout: raw, preprocessed and results roots.

``SSLUNET_RAW``, ``SSLUNET_PREPROCESSED`` and ``SSLUNET_RESULTS`` set each root; any that is
unset falls back to ``$SSLUNET_HOME/{raw,preprocessed,results}`` with ``SSLUNET_HOME``
defaulting to ``~/sslunet``. Only the CLI calls :meth:`Paths.from_environ`; library code takes a
``Paths`` argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class Paths:
    raw: Path
    preprocessed: Path
    results: Path

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> "Paths":
        home = Path(env.get("SSLUNET_HOME") or Path.home() / "sslunet").expanduser()

        def pick(var: str, sub: str) -> Path:
            value = env.get(var)
            return Path(value).expanduser() if value else home / sub

        return cls(
            raw=pick("SSLUNET_RAW", "raw"),
            preprocessed=pick("SSLUNET_PREPROCESSED", "preprocessed"),
            results=pick("SSLUNET_RESULTS", "results"),
        )

    @classmethod
    def under(cls, home: str | Path) -> "Paths":
        home = Path(home)
        return cls(home / "raw", home / "preprocessed", home / "results")

    def describe(self) -> str:
        return (f"sslunet folders: raw={self.raw}  preprocessed={self.preprocessed}  "
                f"results={self.results}")
