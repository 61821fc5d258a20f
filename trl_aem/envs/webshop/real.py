"""Load the real WebShop data files (princeton-nlp/WebShop ``setup.sh`` downloads) into a :class:`Catalog`.

Expected in ``data_dir`` (WebShop's ``data/`` folder):
``items_shuffle_1000.json`` + ``items_ins_v2_1000.json`` (``small=True``, WebShop's ``-d small``) or
``items_shuffle.json`` + ``items_ins_v2.json`` (``small=False``), and ``items_human_ins.json``.

Follows WebShop's ``load_products`` / ``get_goals``: ASIN filtering (``'nan'``, longer than 10, duplicates),
price strings parsed into a value or a range (a range is sampled once, seeded), option values lower-cased
with ``/`` written as `` | ``, attributes from ``items_ins_v2``, human goals (one per instruction with
attributes) or synthetic goals (one per option combination), ``price_upper`` from the next multiples of
10, and the goal list shuffled with seed 233. Splits as in the WebShop paper: ``"test"`` goals 0-499,
``"eval"`` 500-1499, ``"train"`` the rest (with fewer goals, eval is 0-499 and train the rest).
"""

from __future__ import annotations

import itertools
import json
import random
from functools import lru_cache
from pathlib import Path

from rank_bm25 import BM25Okapi

from .catalog import Catalog, Product, tokenize

__all__ = ["load_real_catalog", "real_goals", "REAL_FILES"]

REAL_FILES = {
    True: ("items_shuffle_1000.json", "items_ins_v2_1000.json"),
    False: ("items_shuffle.json", "items_ins_v2.json"),
}
HUMAN_FILE = "items_human_ins.json"
PRICE_RANGE = list(range(10, 1000, 10))


def _files(data_dir: str, small: bool) -> tuple[Path, Path, Path]:
    root = Path(data_dir).expanduser()
    products, attributes = REAL_FILES[small]
    paths = (root / products, root / attributes, root / HUMAN_FILE)
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"WebShop data not found in {root}: missing {missing}. Run WebShop's `setup.sh -d "
            f"{'small' if small else 'all'}` and pass its data/ folder as data_dir."
        )
    return paths


def _parse_price(pricing) -> list[float]:
    if not pricing:
        return [100.0]
    values = []
    for piece in str(pricing).split("$")[1:]:
        digits = "".join(c for c in piece if c.isdigit() or c == ".")
        if digits.strip("."):
            values.append(float(digits))
    return values[:2] or [100.0]


@lru_cache(maxsize=2)
def load_real_catalog(data_dir: str, small: bool = True, seed: int = 233) -> tuple[Catalog, dict]:
    """The catalog and the raw per-ASIN instruction records (for goal building), cached per process."""
    products_path, attributes_path, human_path = _files(data_dir, small)
    records = json.loads(products_path.read_text())
    attributes = json.loads(attributes_path.read_text())
    human = json.loads(human_path.read_text())
    rng = random.Random(seed)
    products, seen, extra = [], set(), {}
    for record in records:
        asin = str(record.get("asin", "nan"))
        if asin == "nan" or len(asin) > 10 or asin in seen:
            continue
        seen.add(asin)
        options = {}
        for name, values in (record.get("customization_options") or {}).items():
            if values is None:
                continue
            options[name.lower()] = [str(v["value"]).strip().replace("/", " | ").lower() for v in values]
        prices = _parse_price(record.get("pricing"))
        price = prices[0] if len(prices) == 1 else rng.uniform(prices[0], prices[1])
        bullets = record.get("small_description") or []
        bullets = [bullets] if isinstance(bullets, str) else list(bullets)
        info = attributes.get(asin, {})
        products.append(
            Product(
                asin=asin,
                title=record.get("name", ""),
                category=str(record.get("category", "")),
                attributes=list(info.get("attributes") or ["DUMMY_ATTR"]),
                options=options,
                price=price,
                description=record.get("full_description") or "",
                features=bullets,
            )
        )
        extra[asin] = {
            "query": str(record.get("query", "")).lower().strip(),
            "product_category": record.get("product_category", ""),
            "instruction": info.get("instruction"),
            "instruction_attributes": info.get("instruction_attributes"),
            "human": human.get(asin, []),
        }
    corpus = [
        tokenize(
            f"{p.title} {p.description} {p.features[0] if p.features else ''} "
            + " ".join(f"{n}: {', '.join(v)}" for n, v in p.options.items())
        )
        for p in products
    ]
    return Catalog(products, BM25Okapi(corpus), {p.asin: p for p in products}), extra


def _price_cap(price: float, rng: random.Random) -> tuple[float, str]:
    above = [p for p in PRICE_RANGE if p > price][:4]
    if len(above) < 2:
        return 1_000_000.0, ""
    cap = float(max(rng.sample(above, 2)))
    return cap, f", and price lower than {cap:.2f} dollars"


@lru_cache(maxsize=4)
def _all_goals(data_dir: str, small: bool, human_goals: bool, seed: int) -> tuple[dict, ...]:
    catalog, extra = load_real_catalog(data_dir, small)
    rng = random.Random(seed)
    goals = []
    for product in catalog.products:
        meta = extra[product.asin]
        cap, price_text = _price_cap(product.price, rng)
        base = {
            "asin": product.asin,
            "category": product.category,
            "attributes": [],
            "price_cap": cap,
            "query": meta["query"],
            "product_category": meta["product_category"],
            "data_dir": data_dir,
            "small": small,
        }
        if human_goals:
            for record in meta["human"]:
                if not record.get("instruction_attributes"):
                    continue
                goals.append(
                    {
                        **base,
                        "attributes": list(record["instruction_attributes"]),
                        "options": list(record.get("instruction_options") or []),
                        "instruction": record["instruction"].strip(".") + price_text,
                    }
                )
        elif meta["instruction"]:
            names = sorted(product.options)
            for combination in itertools.product(*(product.options[n] for n in names)):
                chosen = dict(zip(names, combination, strict=True))
                option_text = (" with " + ", and ".join(f"{n}: {v}" for n, v in chosen.items())) if chosen else ""
                goals.append(
                    {
                        **base,
                        "attributes": list(meta["instruction_attributes"] or []),
                        "options": chosen,
                        "instruction": f"{meta['instruction']}{option_text}{price_text}",
                    }
                )
    random.Random(233).shuffle(goals)
    return tuple(goals)


def real_goals(
    data_dir: str, split: str, *, small: bool = True, human_goals: bool = True, seed: int = 0
) -> list[dict]:
    """Goals of ``split`` (``"train"``, ``"eval"`` or ``"test"``) as WebShopEnv task dicts."""
    goals = list(_all_goals(str(data_dir), small, human_goals, seed))
    if len(goals) >= 1500:
        bounds = {"test": (0, 500), "eval": (500, 1500), "train": (1500, len(goals))}
    else:
        cut = min(500, len(goals) // 2)
        bounds = {"test": (0, cut), "eval": (0, cut), "train": (cut, len(goals))}
    if split not in bounds:
        raise ValueError(f"split must be one of {sorted(bounds)}, got {split!r}")
    start, end = bounds[split]
    return goals[start:end]
