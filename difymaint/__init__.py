"""difymaint: Dify's periodic maintenance jobs as a cron- and CronJob-friendly command-line tool."""

import sys

__version__ = "0.1.0"
MIN_PYTHON = (3, 11)  # datetime.UTC, enum.StrEnum, typing.Self; pyproject's requires-python says the same

# Written for Python 3.8 syntax so that an older interpreter (Ubuntu 22.04's 3.10, run from a checkout) gets
# this one line instead of an ImportError deep inside the package.
if sys.version_info < MIN_PYTHON:  # pragma: no cover - exercised by scripts/demo on an old interpreter
    sys.stderr.write(
        "difymaint: error: needs Python {}.{} or newer, this is {} ({}); on Ubuntu 22.04 install python3.11 "
        "(apt install python3.11 python3.11-venv) or use the container image\n".format(
            *MIN_PYTHON, sys.version.split()[0], sys.executable
        )
    )
    raise SystemExit(2)
