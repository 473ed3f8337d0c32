"""Shared test setup: no test may reach the internet or share state with another."""

from __future__ import annotations

import os

from churnops.settings import QUIET_ENV

for _key, _value in QUIET_ENV.items():
    os.environ.setdefault(_key, _value)
