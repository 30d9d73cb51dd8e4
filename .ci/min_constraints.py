"""Print pip constraints pinning the core dependencies to the minimum
versions setup.cfg declares, so CI can test that those floors are true."""

import configparser
import re
import sys
from pathlib import Path

#: The dependencies whose declared floors CI installs (issue 14).
CORE = ("numpy", "pandas", "scikit-learn", "joblib", "keras", "tensorflow")

config = configparser.ConfigParser()
config.read(Path(__file__).resolve().parent.parent / "setup.cfg")
floors = {}
for line in config["options"]["install_requires"].strip().splitlines():
    match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*)\s*", line)
    if match:
        floors[match.group(1).lower()] = match.group(2)
missing = [name for name in CORE if name not in floors]
if missing:
    sys.exit(f"setup.cfg declares no '>=' floor for {', '.join(missing)}")
print("\n".join(f"{name}=={floors[name]}" for name in CORE))
