"""``WebShopEnv``: WebShop's shopping task in text, offline on a generated catalog.

The agent searches (``search[query]``, BM25 over the catalog), pages through results, opens a product,
picks options, may read its description or features, and buys (``click[buy now]``), all with WebShop's
action grammar and ``[SEP]``-separated text observations. At purchase the episode ends with WebShop's
score: ``r_type * (matched attributes + matched options + price ok) / (goal attributes + goal options + 1)``,
where ``r_type`` is 1 for the right product category and 0.1 otherwise; success means a score of 1.

Reward per episode: the score (``reward="score"``, WebShop's own) or ``success_reward`` on success and 0
otherwise (``reward="success"``, the verl-agent / AEM paper protocol with ``success_reward=10``).

Real WebShop data: pass ``data_dir`` (WebShop's ``data/`` folder after its ``setup.sh``) and the same
environment plays the real products and human (or synthetic) goals, with WebShop's splits; see
:mod:`trl_aem.envs.webshop.real`. Differences from WebShop's own server, by design: BM25 from
``rank_bm25`` instead of pyserini, ``r_type`` from the product category (1, else 0.1) instead of spaCy
noun overlap, and fuzzy matching from ``difflib`` instead of ``thefuzz``.
"""

from __future__ import annotations

import difflib
import re

from ..base import StepResult, extract_action
from .catalog import Catalog, Product, build_catalog, make_goals
from .real import load_real_catalog, real_goals

__all__ = ["WebShopEnv"]

SYSTEM_PROMPT = (
    "You are an expert autonomous agent shopping on a web store for the user. Each turn you see the page and "
    "the actions you can take. Reason step by step inside <think></think>, then give exactly one action "
    "inside <action></action>: search[your query] on the search page, or click[a clickable text] (a product "
    "id, an option value, 'next >', '< prev', 'back to search', 'description', 'features', 'buy now')."
)
_ACTION = re.compile(r"^\s*(search|click)\s*\[(.+)\]\s*$", re.IGNORECASE | re.DOTALL)
PAGE_SIZE = 10
_AVAILABLE_PREFIX = "\nAvailable actions: "


class WebShopEnv:
    """One shopping episode at a time (see the module docstring).

    Args:
        num_products: catalog size. catalog_seed: catalog generator seed. task_seed: goal generator seed.
        reward: ``"score"`` or ``"success"``. success_reward: reward of a perfect purchase in success mode.
        num_train_tasks / num_eval_tasks: how many goals ``tasks(split)`` returns.
    """

    system_prompt = SYSTEM_PROMPT

    def __init__(
        self,
        num_products: int = 1000,
        catalog_seed: int = 0,
        task_seed: int = 0,
        reward: str = "score",
        success_reward: float = 10.0,
        num_train_tasks: int = 2000,
        num_eval_tasks: int = 200,
        data_dir: str | None = None,
        small: bool = True,
        human_goals: bool = True,
    ):
        if reward not in ("score", "success"):
            raise ValueError(f"reward must be 'score' or 'success', got {reward!r}")
        self.num_products, self.catalog_seed, self.task_seed = num_products, catalog_seed, task_seed
        self.reward_mode, self.success_reward = reward, success_reward
        self.num_tasks = {"train": num_train_tasks, "eval": num_eval_tasks}
        self.data_dir, self.small, self.human_goals = data_dir, small, human_goals
        self.catalog: Catalog | None = None
        self.goal: dict = {}

    # ---------------------------------------------------------------- TextEnv
    def tasks(self, split: str) -> list[dict]:
        if self.data_dir is not None:
            return real_goals(
                self.data_dir, split, small=self.small, human_goals=self.human_goals, seed=self.task_seed
            )
        if split not in self.num_tasks:
            raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
        return make_goals(
            split,
            self.num_tasks[split],
            num_products=self.num_products,
            catalog_seed=self.catalog_seed,
            seed=self.task_seed,
        )

    def reset(self, task: dict) -> str:
        for key in ("asin", "category", "attributes", "options", "price_cap", "instruction"):
            if key not in task:
                raise ValueError(f"WebShopEnv task is missing {key!r}; build tasks with WebShopEnv().tasks(split)")
        if task.get("data_dir"):
            self.catalog = load_real_catalog(task["data_dir"], task.get("small", True))[0]
        else:
            self.catalog = build_catalog(
                task.get("num_products", self.num_products), task.get("catalog_seed", self.catalog_seed)
            )
        if task["asin"] not in self.catalog.by_asin:
            raise ValueError(f"product {task['asin']} is not in this catalog (num_products / catalog_seed differ)")
        self.goal = dict(task)
        self.page, self.query, self.results, self.result_page = "search", "", [], 0
        self.item: Product | None = None
        self.selected: dict[str, str] = {}
        self.used_title_search = False
        return self._observation()

    def step(self, action: str) -> StepResult:
        parsed = extract_action(action)
        match = _ACTION.match(parsed) if parsed else None
        if match is None:
            return self._invalid(
                "Invalid action: answer with <action>search[...]</action> or <action>click[...]</action>."
            )
        verb, argument = match.group(1).lower(), " ".join(match.group(2).split())
        if verb == "search":
            if self.page != "search":
                return self._invalid("Invalid action: search is only available on the search page.")
            self.query, self.results, self.result_page = argument, self.catalog.search(argument), 0
            self.page = "results"
            return self._ok()
        target = argument.lower()
        if target not in self._clickables():
            return self._invalid(f"Invalid action: '{argument}' is not clickable on this page.")
        if target == "back to search":
            self.page, self.item, self.selected = "search", None, {}
        elif target == "next >":
            self.result_page += 1
        elif target == "< prev":
            if self.page == "results":
                self.result_page -= 1
            elif self.page == "item":
                self.page, self.item, self.selected = "results", None, {}
            else:
                self.page = "item"
        elif self.page == "results":
            self.item = self.catalog.by_asin[target.upper()]
            self.page, self.selected = "item", {}
        elif target in ("description", "features"):
            self.page = target
        elif target == "buy now":
            return self._buy()
        else:  # an option value
            for name, values in self.item.options.items():
                if target in values:
                    self.selected[name] = target
                    break
        return self._ok()

    def expert_action(self) -> str | None:
        """The next action of a scripted shopper that knows the target product."""
        goal = self.goal
        if self.page == "search":
            if self.used_title_search:
                target = self.catalog.by_asin[goal["asin"]]
                return f"<action>search[{target.title}]</action>"
            return f"<action>search[{' '.join(goal['attributes'])} {goal['category']}]</action>"
        if self.page == "results":
            shown = [p.asin for p in self._shown()]
            if goal["asin"] in shown:
                return f"<action>click[{goal['asin'].lower()}]</action>"
            if "next >" in self._clickables() and self.result_page < 2:
                return "<action>click[next >]</action>"
            self.used_title_search = True
            return "<action>click[back to search]</action>"
        if self.page == "item":
            if self.item.asin != goal["asin"]:
                return "<action>click[< prev]</action>"
            offered = {v for values in self.item.options.values() for v in values}
            for value in _wanted_options(goal):
                if value in offered and value not in self.selected.values():
                    return f"<action>click[{value}]</action>"
            return "<action>click[buy now]</action>"
        return "<action>click[< prev]</action>"

    # ---------------------------------------------------------------- pages
    def _shown(self) -> list[Product]:
        start = self.result_page * PAGE_SIZE
        return self.results[start : start + PAGE_SIZE]

    def _clickables(self) -> list[str]:
        if self.page == "search":
            return []
        clicks = ["back to search"]
        if self.page == "results":
            if (self.result_page + 1) * PAGE_SIZE < len(self.results):
                clicks.append("next >")
            if self.result_page > 0:
                clicks.append("< prev")
            clicks += [p.asin.lower() for p in self._shown()]
        elif self.page == "item":
            clicks.append("< prev")
            clicks += [v for values in self.item.options.values() for v in values]
            clicks += ["description", "features", "buy now"]
        else:
            clicks.append("< prev")
        return clicks

    def admissible_actions(self) -> list[str]:
        """The actions valid on the current page (``search[<your query>]`` stands for any search)."""
        return self._admissible()

    @staticmethod
    def history_observation(observation: str) -> str:
        """The page without its list of available actions: step-mode prompts list the actions of the current
        page only (as verl-agent's WebShop prompt does)."""
        return observation.split(_AVAILABLE_PREFIX, 1)[0]

    @staticmethod
    def state_key(observation: str) -> str:
        """GiGPO's anchor state of a page: the page text without its action list (which the page determines),
        whitespace collapsed."""
        return " ".join(observation.split(_AVAILABLE_PREFIX, 1)[0].split())

    def _admissible(self) -> list[str]:
        if self.page == "search":
            return ["search[<your query>]"]
        return [f"click[{c}]" for c in self._clickables()]

    def _observation(self) -> str:
        parts = ["Instruction:", self.goal["instruction"]]
        if self.page == "search":
            parts.append("Search")
        elif self.page == "results":
            parts += ["Back to Search", f"Page {self.result_page + 1} (Total results: {len(self.results)})"]
            if "next >" in self._clickables():
                parts.append("Next >")
            if self.result_page > 0:
                parts.append("< Prev")
            for p in self._shown():
                parts += [p.asin, p.title, f"${p.price:.2f}"]
        elif self.page == "item":
            item = self.item
            parts += ["Back to Search", "< Prev"]
            for name, values in item.options.items():
                chosen = self.selected.get(name)
                parts += [name] + [f"{v} (selected)" if v == chosen else v for v in values]
            parts += [item.title, f"Price: ${item.price:.2f}", "Rating: N.A.", "Description", "Features", "Buy Now"]
        else:
            parts += ["Back to Search", "< Prev"]
            parts.append(self.item.description if self.page == "description" else " ".join(self.item.features))
        return " [SEP] ".join(parts) + _AVAILABLE_PREFIX + ", ".join(self._admissible())

    def _ok(self) -> StepResult:
        return StepResult(self._observation(), 0.0, False, {"invalid": False, "admissible": self._admissible()})

    def _invalid(self, message: str) -> StepResult:
        return StepResult(
            f"{message}\n{self._observation()}", 0.0, False, {"invalid": True, "admissible": self._admissible()}
        )

    def score(self, product: Product, selected: dict[str, str]) -> float:
        """WebShop's purchase score of ``product`` bought with ``selected`` options under the current goal."""
        goal = self.goal
        r_type = 1.0 if product.category == goal["category"] else 0.1
        text = " ".join([product.title, *product.features, product.description]).lower()
        attributes = sum(
            any(_similar(a, have) for have in product.attributes) or a.lower() in text for a in goal["attributes"]
        )
        wanted = _wanted_options(goal)
        options = sum(any(_similar(value, chosen) for chosen in selected.values()) for value in wanted)
        price = float(product.price <= goal["price_cap"])
        return r_type * (attributes + options + price) / (len(goal["attributes"]) + len(wanted) + 1)

    def _buy(self) -> StepResult:
        score = self.score(self.item, self.selected)
        success = score >= 1.0 - 1e-9
        reward = score if self.reward_mode == "score" else (self.success_reward if success else 0.0)
        info = {"invalid": False, "success": success, "score": score, "purchased": self.item.asin}
        return StepResult(
            f"Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] {score:.3f}",
            reward,
            True,
            info,
        )


def _wanted_options(goal: dict) -> list[str]:
    """Goal option values: a ``{name: value}`` dict (generated / synthetic goals) or a list (human goals)."""
    options = goal["options"]
    return list(options.values()) if isinstance(options, dict) else list(options)


def _similar(a: str, b: str) -> bool:
    """WebShop-style fuzzy match: equal, one token set containing the other, or close after sorting tokens."""
    ta, tb = set(a.lower().split()), set(b.lower().split())
    if not ta or not tb:
        return False
    if ta <= tb or tb <= ta:
        return True
    return difflib.SequenceMatcher(None, " ".join(sorted(ta)), " ".join(sorted(tb))).ratio() > 0.85
