"""Net against recipe: groups named ``NET@RECIPE`` (run folders ``NET@RECIPE-s<seed>``, as
``launch/fullsize.sh`` writes them) laid out as a NET x RECIPE table of test top-1 error, mean ±
std over seeds, then each net's effect under each recipe and each recipe's effect on each net,
judged against seed noise with :func:`.stats.verdict`.
"""

from __future__ import annotations

import math

from alexnet2012.report.runs import Group
from alexnet2012.report.stats import pm, verdict

METRIC = "test/top1_err"


def cells(groups: list[Group]) -> dict[tuple[str, str], Group]:
    """(net, recipe) -> group, for the groups whose names hold one ``@``."""
    out = {}
    for g in groups:
        net, at, recipe = g.name.partition("@")
        if at and net and recipe and "@" not in recipe:
            out[net, recipe] = g
    return out


def _errors(group: Group) -> list[float]:
    return [r.summary[METRIC] * 100 for r in group.runs if METRIC in r.summary]


def _effect(label: str, a: Group, b: Group) -> str:
    diff, two_se, word = verdict(_errors(a), _errors(b))
    noise = "-" if math.isnan(two_se) else f"{two_se:.2f}"
    return f"| {label} | {a.name} | {b.name} | {diff:+.2f} | {noise} | {word} |"


def grid_section(groups: list[Group]) -> list[str]:
    """The Markdown section; empty when fewer than two ``NET@RECIPE`` groups are present."""
    found = cells(groups)
    if len(found) < 2:
        return []
    nets = list(dict.fromkeys(n for n, _ in found))
    recipes = list(dict.fromkeys(r for _, r in found))
    out = ["## Net against recipe", "",
           "Test top-1 error %, mean ± std over seeds (runs in brackets).", "",
           "| net \\ recipe | " + " | ".join(recipes) + " |",
           "|" + "---|" * (len(recipes) + 1)]  # fmt: skip
    for n in nets:
        row = []
        for r in recipes:
            g = found.get((n, r))
            row.append("-" if g is None else f"{pm(_errors(g))} ({len(_errors(g))})")
        out.append(f"| {n} | " + " | ".join(row) + " |")
    effects = []
    for r in recipes:  # the net's effect, recipe fixed
        for i, a in enumerate(nets):
            for b in nets[i + 1 :]:
                if (a, r) in found and (b, r) in found:
                    effects.append(_effect(f"net, {r} recipe", found[a, r], found[b, r]))
    for n in nets:  # the recipe's effect, net fixed
        for i, a in enumerate(recipes):
            for b in recipes[i + 1 :]:
                if (n, a) in found and (n, b) in found:
                    effects.append(_effect(f"recipe, {n}", found[n, a], found[n, b]))
    out += ["", "Effects: error of A minus error of B in points, one factor fixed; larger than "
            "noise by the rule of the differences above.", "",
            "| effect | A | B | A - B | 2 x SE | verdict |", "|---|---|---|---|---|---|",
            *effects]  # fmt: skip
    return out
