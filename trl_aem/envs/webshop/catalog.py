"""A generated WebShop-style product catalog and shopping goals (offline, seeded).

Products have a category, attributes (e.g. "water resistant"), option groups (color, size, ...) and a
price; goals ask for a category, some of the target product's attributes, one value per option group
and a price cap, worded like WebShop instructions. Goals whose target product index is even are train
tasks, odd ones eval tasks, so the two splits never share a target product.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from functools import lru_cache

from rank_bm25 import BM25Okapi

__all__ = ["Product", "Catalog", "build_catalog", "make_goals", "tokenize"]

CATEGORIES: dict[str, dict] = {
    "running shoes": {
        "attributes": ["non slip", "lightweight", "breathable", "arch support", "water resistant", "memory foam"],
        "options": {"color": ["black", "white", "navy", "grey", "red"], "size": ["7", "8", "9", "10", "11", "12"]},
        "price": (25, 140),
    },
    "t-shirt": {
        "attributes": ["cotton", "machine wash", "slim fit", "short sleeve", "moisture wicking", "organic"],
        "options": {
            "color": ["black", "white", "olive", "blue", "pink"],
            "size": ["small", "medium", "large", "x-large"],
        },
        "price": (8, 45),
    },
    "headphones": {
        "attributes": ["wireless", "noise cancelling", "bluetooth", "over ear", "long battery life", "foldable"],
        "options": {"color": ["black", "silver", "white", "blue"]},
        "price": (15, 300),
    },
    "coffee beans": {
        "attributes": ["organic", "dark roast", "whole bean", "fair trade", "low acid", "decaf"],
        "options": {"size": ["12 ounce", "2 pound", "5 pound"], "flavor": ["original", "vanilla", "hazelnut"]},
        "price": (7, 60),
    },
    "backpack": {
        "attributes": ["water resistant", "laptop sleeve", "lightweight", "usb charging port", "anti theft"],
        "options": {"color": ["black", "grey", "green", "navy"], "size": ["20 liter", "30 liter", "40 liter"]},
        "price": (18, 120),
    },
    "desk lamp": {
        "attributes": ["led", "dimmable", "usb charging port", "eye caring", "touch control", "clamp"],
        "options": {"color": ["black", "white", "silver"]},
        "price": (12, 90),
    },
    "face moisturizer": {
        "attributes": ["fragrance free", "hyaluronic acid", "oil free", "spf 30", "sensitive skin", "vegan"],
        "options": {"size": ["1.7 ounce", "3.4 ounce"], "scent": ["unscented", "lavender", "citrus"]},
        "price": (6, 70),
    },
    "phone case": {
        "attributes": ["shockproof", "slim", "wireless charging compatible", "kickstand", "clear"],
        "options": {"color": ["black", "clear", "blue", "purple"], "model": ["iphone 14", "iphone 15", "galaxy s23"]},
        "price": (5, 40),
    },
}
BRANDS = ["Acme", "Nordic", "Zenith", "Orbit", "Maple", "Vertex", "Lumen", "Solace", "Kestrel", "Pioneer"]


def tokenize(text: str) -> list[str]:
    table = str.maketrans({c: " " for c in string.punctuation if c not in "-."})
    return text.lower().translate(table).split()


@dataclass
class Product:
    asin: str
    title: str
    category: str
    attributes: list[str]
    options: dict[str, list[str]]
    price: float
    description: str
    features: list[str] = field(default_factory=list)


@dataclass
class Catalog:
    products: list[Product]
    index: BM25Okapi
    by_asin: dict[str, Product]

    def search(self, query: str, k: int = 50) -> list[Product]:
        """Top-``k`` products for ``query`` by BM25 over title, category and attributes."""
        scores = self.index.get_scores(tokenize(query))
        order = sorted(range(len(self.products)), key=lambda i: (-scores[i], i))
        return [self.products[i] for i in order[:k]]


@lru_cache(maxsize=4)
def build_catalog(num_products: int = 1000, seed: int = 0) -> Catalog:
    """``num_products`` seeded products over the categories above (cached per process)."""
    rng = random.Random(seed)
    names = list(CATEGORIES)
    products = []
    for i in range(num_products):
        category = names[i % len(names)]
        spec = CATEGORIES[category]
        attributes = sorted(rng.sample(spec["attributes"], rng.randint(2, 4)))
        options = {
            name: sorted(rng.sample(values, rng.randint(2, len(values)))) for name, values in spec["options"].items()
        }
        low, high = spec["price"]
        price = round(rng.uniform(low, high), 2)
        brand = rng.choice(BRANDS)
        title = f"{brand} {' '.join(a.title() for a in attributes[:2])} {category.title()}"
        asin = "B0" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(8))
        description = f"This {category} from {brand} is {', '.join(attributes)}."
        features = [f"{a.capitalize()}." for a in attributes] + [
            f"Available in {len(v)} {n}s." for n, v in options.items()
        ]
        products.append(Product(asin, title, category, attributes, options, price, description, features))
    corpus = [tokenize(f"{p.title} {p.category} {' '.join(p.attributes)}") for p in products]
    return Catalog(products, BM25Okapi(corpus), {p.asin: p for p in products})


def make_goals(
    split: str, count: int, *, num_products: int = 1000, catalog_seed: int = 0, seed: int = 0
) -> list[dict]:
    """``count`` goals (task dicts) for ``split`` (``"train"``: even target products, else odd ones)."""
    catalog = build_catalog(num_products, catalog_seed)
    parity = 0 if split == "train" else 1
    rng = random.Random(f"{seed}-{split}")
    candidates = [p for i, p in enumerate(catalog.products) if i % 2 == parity]
    goals = []
    for _ in range(count):
        product = rng.choice(candidates)
        attributes = sorted(rng.sample(product.attributes, rng.randint(1, min(2, len(product.attributes)))))
        options = {name: rng.choice(values) for name, values in product.options.items()}
        price_cap = float(int(product.price * rng.uniform(1.1, 1.6)) + 1)
        wanted = ", ".join(f"{name}: {value}" for name, value in options.items())
        instruction = (
            f"i need {' and '.join(attributes)} {product.category} with {wanted}, "
            f"and price lower than {price_cap:.2f} dollars"
        )
        goals.append(
            {
                "asin": product.asin,
                "category": product.category,
                "attributes": attributes,
                "options": options,
                "price_cap": price_cap,
                "instruction": instruction,
                "num_products": num_products,
                "catalog_seed": catalog_seed,
            }
        )
    return goals
