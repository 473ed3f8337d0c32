"""The Feast repository, shipped inside the package so an installed churnops finds its definitions.

Feast imports the other files here by name (`feast apply` from this folder); `.feastignore` keeps
this one out of that.
"""

from pathlib import Path

FEATURE_REPO = Path(__file__).resolve().parent
