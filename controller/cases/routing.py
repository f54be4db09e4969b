"""Case routing: the category of an alarm, the time a case may take, the department."""

from __future__ import annotations

from controller.cases.config import CaseCategory, CasesConfig
from controller.cases.requests import CaseInvalid


class CaseRouting:
    """The routing policy of a city's cases, from the ``cases`` config."""

    def __init__(self, config: CasesConfig) -> None:
        self.config = config

    def category_for(self, device_class: str, kind: str) -> CaseCategory:
        """The category of an alarm of this device class and rule kind."""
        fallback = None
        for category in self.config.categories:
            if category.device_class not in (None, device_class):
                continue
            if category.rule_kinds is None:
                fallback = fallback or category
            elif kind in category.rule_kinds:
                return category
        if fallback is None:
            raise CaseInvalid(f"no case category for {device_class} alarms of kind {kind}")
        return fallback

    def time_limit(self, category: str, severity: str) -> float:
        """Seconds a case may take: the most specific matching limit."""
        best: tuple[int, float] | None = None
        for limit in self.config.time_limits:
            if limit.category not in (None, category) or limit.severity not in (None, severity):
                continue
            specificity = (limit.category is not None) * 2 + (limit.severity is not None)
            if best is None or specificity > best[0]:
                best = (specificity, limit.minutes * 60)
        return best[1] if best else 2 * 86400.0

    def department_for(self, category: str, grid: str, fallback: str = "") -> str:
        """The responsible department from the routing table (first match), else ``fallback``."""
        for rule in self.config.routing:
            if rule.category not in (None, category):
                continue
            if rule.grid_prefix is not None and not grid.startswith(rule.grid_prefix):
                continue
            return rule.department
        return fallback

    def departments(self) -> list[str]:
        """Every department the routing table names, in its order: the choices to dispatch to."""
        return list(dict.fromkeys(rule.department for rule in self.config.routing))
