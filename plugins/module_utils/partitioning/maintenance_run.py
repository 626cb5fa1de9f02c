# Copyright: keel.postgres contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One maintenance run of one range-partitioned parent: plan, then finalize, premake, detach, archive, drop.

The whole plan is computed, and everything that can be refused is refused,
before the first change: check mode returns that plan. The order of the work
matters. Pending detaches are finalized first (PostgreSQL refuses any other
concurrent detach on the parent while one is pending); future partitions come
next, because running out of them makes inserts fail; expired partitions are
detached one at a time; each detached table is archived and only then, when
asked, dropped.
"""

from __future__ import annotations

import datetime
from typing import Any, Dict, List, Optional

from ansible_collections.keel.postgres.plugins.module_utils.errors import InvalidOption
from ansible_collections.keel.postgres.plugins.module_utils.observe.metrics import RunMetrics
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.archive import PartitionArchiver, return_home
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.detach import (
    detach_method,
    detach_partition,
    expired_partitions,
    finalize_pending,
    retention_cutoff,
)
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.drop import drop_table
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.interval import interval_for
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.maintenance_request import MaintenanceRequest
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.marker import (
    DetachedTable,
    detach_record,
    marked_tables,
    write_mark,
)
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.partition_set import (
    PartitionSet,
    key_now,
    read_partition_set,
)
from ansible_collections.keel.postgres.plugins.module_utils.partitioning.premake import (
    NewPartition,
    create_partitions,
    plan_premake,
    refuse_default_overlap,
    refuse_taken_names,
)


class MaintenanceRun:
    def __init__(self, conn: Any, request: MaintenanceRequest, metrics: RunMetrics, archiver: Optional[PartitionArchiver]) -> None:
        self.conn = conn
        self.request = request
        self.metrics = metrics
        self.archiver = archiver
        self.policy = request.policy

    def run(self, check_mode: bool) -> Dict[str, Any]:
        with self.metrics.phase("plan"):
            parent = read_partition_set(self.conn, self.request.table)
            before = [p.as_dict() for p in parent.partitions]
            plan = self._plan(parent)
        result: Dict[str, Any] = {"table": parent.qualified, "plan": _plan_summary(plan), "created": [], "detached": [],
                                  "finalized_pending": [], "archived": [], "dropped": []}
        if check_mode:
            result.update(changed=_plan_changes(plan), partitions=_simulated(before, plan),
                          diff=_diff(parent.qualified, before, _simulated(before, plan)))
            return result
        self._execute(parent, plan, result)
        with self.metrics.phase("plan"):
            after = [p.as_dict() for p in read_partition_set(self.conn, self.request.table).partitions]
        changed = any(result[k] for k in ("created", "detached", "finalized_pending", "archived", "dropped"))
        result.update(changed=changed, partitions=after, diff=_diff(parent.qualified, before, after))
        return result

    # -- plan ----------------------------------------------------------------------------------------------

    def _plan(self, parent: PartitionSet) -> Dict[str, Any]:
        if self.request.retention is not None and not parent.is_time_key:
            raise InvalidOption("retention", "{0} is partitioned on the integer column {1}: retention is a duration and needs a "
                                             "time key (timestamptz, timestamp or date)".format(parent.qualified, parent.key_column))
        now = key_now(self.conn, parent)
        cutoff = retention_cutoff(now, self.request.retention) if self.request.retention is not None else None
        create: List[NewPartition] = []
        if self.request.premake:
            create = plan_premake(parent, interval_for(parent, self.request.interval), now, self.request.premake, cutoff)
            refuse_taken_names(self.conn, create)
            refuse_default_overlap(self.conn, parent, create)
        detach = expired_partitions(parent, now, self.request.retention) if cutoff is not None else []
        marked = marked_tables(self.conn, parent)
        pending = {p.name for p in parent.pending}
        detached_earlier = [t for t in marked if not t.is_partition or t.name in pending]
        # Detached by this run, or by an earlier one and still owed an archive or a drop.
        owed = [("{0}.{1}".format(t.home, t.name), t.archived) for t in detached_earlier] + [(p.qualified, False) for p in detach]
        if self.archiver is not None:
            with self.metrics.phase("check_archive"):
                self.archiver.check(datetime.datetime.now(datetime.timezone.utc))
        archive = [name for name, archived in owed if not archived] if self.archiver is not None else []
        drop = [name for name, _unused in owed] if self.request.drop_detached else []
        return {"now": now, "finalize": parent.pending, "create": create, "detach": detach, "archive": archive, "drop": drop,
                "method": detach_method(parent)}

    # -- execute -------------------------------------------------------------------------------------------

    def _execute(self, parent: PartitionSet, plan: Dict[str, Any], result: Dict[str, Any]) -> None:
        with self.metrics.phase("finalize"):
            for partition in plan["finalize"]:
                finalize_pending(self.conn, parent, partition, self.policy, self.metrics)
                result["finalized_pending"].append(partition.qualified)
        with self.metrics.phase("premake"):
            result["created"] = [p.as_dict() for p in create_partitions(self.conn, parent, plan["create"], self.policy, self.metrics)]
        with self.metrics.phase("detach"):
            for partition in plan["detach"]:
                write_mark(self.conn, partition.schema, partition.name, detach_record(parent, partition), self.policy, self.metrics)
                method = detach_partition(self.conn, parent, partition, self.policy, self.metrics)
                result["detached"].append(dict(partition.as_dict(), method=method))
        for table in marked_tables(self.conn, parent):
            if not table.is_partition:
                self._archive_and_drop(table, result)

    def _archive_and_drop(self, table: DetachedTable, result: Dict[str, Any]) -> None:
        if self.archiver is not None and not table.archived:
            with self.metrics.phase("archive"):
                archived = self.archiver.archive(self.conn, table, self.policy)
            result["archived"].append(archived)
            location = archived["table"]
        else:
            location = return_home(self.conn, table, self.policy, self.metrics)
        if self.request.drop_detached:
            with self.metrics.phase("drop"):
                drop_table(self.conn, location, self.policy, self.metrics)
            result["dropped"].append(location)


def _plan_summary(plan: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "key_now": plan["now"].isoformat() if hasattr(plan["now"], "isoformat") else plan["now"],
        "finalize": [p.qualified for p in plan["finalize"]],
        "create": [p.as_dict() for p in plan["create"]],
        "detach": [dict(p.as_dict(), method=plan["method"]) for p in plan["detach"]],
        "archive": plan["archive"],
        "drop": plan["drop"],
    }


def _plan_changes(plan: Dict[str, Any]) -> bool:
    return any(plan[k] for k in ("finalize", "create", "detach", "archive", "drop"))


def _simulated(before: List[Dict[str, Any]], plan: Dict[str, Any]) -> List[Dict[str, Any]]:
    gone = {p.qualified for p in plan["detach"]} | {p.qualified for p in plan["finalize"]}
    return [p for p in before if p["name"] not in gone] + [p.as_dict() for p in plan["create"]]


def _diff(table: str, before: List[Dict[str, Any]], after: List[Dict[str, Any]]) -> Dict[str, str]:
    return {"before_header": table, "after_header": table, "before": _listing(before), "after": _listing(after)}


def _listing(partitions: List[Dict[str, Any]]) -> str:
    lines = sorted("{0} DEFAULT".format(p["name"]) if p["default"] else "{0} FROM {1} TO {2}".format(
        p["name"], p["from"] or "MINVALUE", p["to"] or "MAXVALUE") for p in partitions)
    return "".join(line + "\n" for line in lines)
