"""Names every stage from training rightwards must agree on: the registered model, its aliases, the label.

Training registers versions under these names, the promotion gate moves the aliases and serving
loads them; one definition keeps a rename from silently splitting them apart.
"""

from __future__ import annotations

REGISTERED_MODEL = "churn-model"
CHAMPION = "champion"
CHALLENGER = "challenger"
LABEL_COLUMN = "label"
