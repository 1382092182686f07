"""The Grafana dashboards shipped with the Helm chart, and the metric names their queries use."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "helm" / "prism" / "dashboards"

_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
"""Keywords whose parenthesis holds label names."""
_NON_METRIC_WORDS = _LABEL_LIST_KEYWORDS | {
    *("and", "or", "unless", "bool", "offset", "inf", "nan"),
    *("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"),
    *("bottomk", "topk", "quantile", "limitk", "limit_ratio"),
}
"""Keywords, aggregation operators (``sum by (le) (...)``) and constants (case-insensitive)."""

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\]")
_BRACKETS = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_TOKEN = re.compile(
    r"(?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*(?![\w:]))"
    r"|(?P<number>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[a-zA-Z_:][\w:]*)"
    r"|(?P<open>\()"
    r"|(?P<close>\))"
    r"|(?P<other>\S)"
)
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<args>.*)\)\s*$", re.DOTALL)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    Strings, Grafana variables, label matchers (``{...}``) and ranges (``[...]``) go first;
    then an identifier is a metric name unless a parenthesis follows it (a function or an
    aggregation), it is a keyword, or it sits in the label list of ``by (...)``,
    ``without (...)``, ``on (...)``, ``ignoring (...)`` or ``group_left/right (...)``.
    """
    text = _STRING.sub(" ", expr)
    text = _GRAFANA_VARIABLE.sub(" ", text)
    text = _BRACKETS.sub(" ", text)
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(text)]
    names: set[str] = set()
    index = 0
    while index < len(tokens):
        kind, value = tokens[index]
        following = tokens[index + 1][0] if index + 1 < len(tokens) else None
        if kind == "name" and value.lower() in _LABEL_LIST_KEYWORDS and following == "open":
            index = _after_closing(tokens, index + 1)
            continue
        if kind == "name" and following != "open" and value.lower() not in _NON_METRIC_WORDS:
            names.add(value)
        index += 1
    return names


def _after_closing(tokens: list[tuple[str | None, str]], opening: int) -> int:
    """The index after the parenthesis that closes the one at ``opening``."""
    depth = 0
    for index in range(opening, len(tokens)):
        depth += {"open": 1, "close": -1}.get(tokens[index][0] or "", 0)
        if depth == 0:
            return index + 1
    raise ValueError("unbalanced parentheses in a PromQL expression")


def variable_metric_names(query: str) -> set[str]:
    """The metric a ``label_values(metric{...}, label)`` variable query reads (none for others)."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        return set()
    args = match.group("args")
    if "," not in _STRING.sub("", _BRACKETS.sub("", args)):
        return set()  # label_values(label): a label of every series, no metric named
    return metric_names(args.rsplit(",", 1)[0])


@dataclass(frozen=True)
class Dashboard:
    """One dashboard file and the parsed JSON model."""

    path: Path
    model: dict

    @property
    def uid(self) -> str:
        return self.model["uid"]

    @property
    def panels(self) -> list[dict]:
        """Every panel, those nested in collapsed rows included."""
        panels = []
        for panel in self.model.get("panels", []):
            panels.append(panel)
            panels.extend(panel.get("panels", []))
        return panels

    def panel_metrics(self) -> dict[str, set[str]]:
        """Metric names per panel title, from every target's ``expr``."""
        return {
            panel["title"]: set().union(
                *(metric_names(target["expr"]) for target in panel.get("targets", []))
            )
            for panel in self.panels
        }

    def variable_metrics(self) -> set[str]:
        """Metric names the template variables' queries read."""
        names: set[str] = set()
        for variable in self.model.get("templating", {}).get("list", []):
            if variable.get("type") != "query":
                continue
            query = variable["query"]
            names |= variable_metric_names(query["query"] if isinstance(query, dict) else query)
        return names

    def metrics(self) -> set[str]:
        """Every metric name the dashboard queries, panels and variables together."""
        return set().union(self.variable_metrics(), *self.panel_metrics().values())


def load_dashboards(folder: Path = DASHBOARDS_DIR) -> list[Dashboard]:
    """Every ``*.json`` dashboard in ``folder``, sorted by file name."""
    return [
        Dashboard(path, json.loads(path.read_text(encoding="utf-8")))
        for path in sorted(folder.glob("*.json"))
    ]
