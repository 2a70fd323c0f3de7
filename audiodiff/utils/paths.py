"""Where the package's own files are."""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# In a checkout `audiodiff/conf` is a link to the repository's conf/; an installed package carries a copy.
CONF_DIR = PACKAGE_DIR / "conf"
