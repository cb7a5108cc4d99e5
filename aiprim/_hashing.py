"""Short content hashes of JSON-able objects (configs, table digests)."""

from __future__ import annotations

import hashlib
import json


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]
