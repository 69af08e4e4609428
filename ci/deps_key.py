"""Print a short hash of the dependency pins in pyproject.toml (the key of a reusable venv)."""

import hashlib
import json
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
pins = {"python": f"{sys.version_info.major}.{sys.version_info.minor}", "deps": project["dependencies"],
        "extras": project.get("optional-dependencies", {})}
print(hashlib.sha256(json.dumps(pins, sort_keys=True).encode()).hexdigest()[:16])
