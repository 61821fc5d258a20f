"""WebShop: shopping with ``search[...]`` / ``click[...]`` on a generated catalog or WebShop's real data.

- :mod:`.env`: :class:`WebShopEnv` (the TextEnv): pages, BM25 search, WebShop's purchase score;
- :mod:`.catalog`: the seeded offline catalog and goals;
- :mod:`.real`: loading WebShop's own product and goal files.
"""

from .catalog import build_catalog, make_goals
from .env import WebShopEnv
from .real import load_real_catalog, real_goals

__all__ = ["WebShopEnv", "build_catalog", "load_real_catalog", "make_goals", "real_goals"]
