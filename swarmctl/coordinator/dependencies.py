"""Dependencies between cases: validation and the graph the scheduler needs. Pure code.

A case may depend on other cases of the same run (the manifest's ``depends_on``, or the
``swarm_depends_on`` pytest marker). Together they must form a DAG: a dependency on a case
that is not in the run, or a cycle, is a usage error raised before anything runs.
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping, Sequence

from swarmctl.errors import UsageError


class DependencyError(UsageError):
    """Declared dependencies name a case that is not in the run, or form a cycle."""


def resolve(case_ids: Sequence[str], declared: Mapping[str, Sequence[str]]) -> dict[int, list[int]]:
    """Map each case index to the indexes it depends on; raise DependencyError if invalid."""
    index = {case_id: i for i, case_id in reversed(list(enumerate(case_ids)))}
    graph: dict[int, list[int]] = {}
    for case_id, names in declared.items():
        if case_id not in index:
            continue  # a test that was deselected; nothing waits for it
        for name in names:
            if name not in index:
                raise DependencyError(
                    f"{case_id!r} depends on {name!r}, which is not in this run: check the id, "
                    "or include that test in the run"
                )
        graph[index[case_id]] = sorted({index[name] for name in names})

    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(case_ids[i] for i in exc.args[1])
        raise DependencyError(f"dependencies form a cycle: {cycle}; remove one of these dependencies") from None
    return graph


def dependents_of(graph: Mapping[int, Sequence[int]]) -> dict[int, list[int]]:
    """Invert a dependency graph: each case to the cases that depend on it directly."""
    inverted: dict[int, list[int]] = {}
    for case, needs in graph.items():
        for need in needs:
            inverted.setdefault(need, []).append(case)
    return inverted


def levels(graph: Mapping[int, Sequence[int]], cases: Sequence[int]) -> list[list[int]]:
    """Group ``cases`` into levels: a case's dependencies all lie in earlier levels."""
    sorter = graphlib.TopologicalSorter({case: graph.get(case, ()) for case in cases})
    sorter.prepare()
    wanted = set(cases)
    result = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        result.append([case for case in ready if case in wanted])
        sorter.done(*ready)
    return [level for level in result if level]
