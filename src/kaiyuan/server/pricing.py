"""What a request cost and whose model it used, for its usage row and USD budgets.

The maker of a model (publisher, origin country, licence) comes from its store record, looked
up once per model name. The price is the model's entry in ``prices`` (dollars per million input
and output tokens); without one, the request's share of the machine as the evals count it:
``dollars_per_hour`` times its duration, divided among the ``parallel`` slots it ran beside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kaiyuan.config import Settings
from kaiyuan.errors import KaiyuanError

MAX_CACHED = 4096  # model names remembered (names come from clients: bounded)


@dataclass(slots=True, frozen=True)
class Maker:
    model: str  # the canonical id (an alias resolved)
    publisher: str | None = None
    origin: str | None = None
    licence: str | None = None


class Pricing:
    def __init__(self, settings: Settings, state: Any) -> None:
        self.settings = settings
        self.state = state  # app.state: the pool is there once the server has started
        self._makers: dict[str, Maker] = {}

    def maker(self, name: str) -> Maker:
        """Who made the model ``name`` names. Reads the store: call it off the event loop."""
        found = self._makers.get(name)
        if found is not None:
            return found
        pool = getattr(self.state, "pool", None)
        model = self.settings.aliases.get(name, name)
        found = Maker(model)
        store = getattr(pool, "store", None)
        if store is not None:
            try:
                record = store.get(model)
            except (KaiyuanError, OSError, ValueError):
                record = None  # an unknown model: its request failed, it made nothing
            if record is not None:
                found = Maker(model, record.publisher, record.origin, record.licence)
                if len(self._makers) < MAX_CACHED:  # a model pulled later is looked up then
                    self._makers[name] = found
        return found

    def cost(self, model: str | None, prompt: int, completion: int, seconds: float) -> float:
        price = self.settings.prices.get(model) if model else None
        if price is not None:
            return (prompt * price[0] + completion * price[1]) / 1e6
        if not (prompt or completion):
            return 0.0  # a refused or failed request ran nothing
        return self.settings.dollars_per_hour * seconds / 3600 / self.settings.parallel
