"""A 100,000-group tree of depth 9 on SQLite: list the subtree of a depth-5 group with its exact
total (p95), the query plan (an index range on the path), and moving a ~10,000-group subtree."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import func, select, text

from bench.common import describe_ms, group_row, percentile, target, temp_dir
from heron.api.v2 import wire
from heron.bootstrap import prepare
from heron.config import Settings
from heron.db.engine import Database
from heron.tenancy import groups
from heron.tenancy.access import SYSTEM, Actor, Role, subtree_upper_bound
from heron.tenancy.models import Group

TOTAL = 100_000
OPERATORS = 11  # root > operators (depth 1) > ternary trees down to depth 9


def build_tree(db: Database, root_id: int) -> tuple[int, int, int]:
    """Insert the tree with executemany, breadth-first per operator, ids assigned here."""
    now = datetime.now(UTC)
    rows: list[dict[str, object]] = []
    next_id = root_id + 1
    depth5: int | None = None
    operators: list[int] = []
    for _ in range(OPERATORS):
        if next_id > TOTAL:
            break
        op_id, next_id = next_id, next_id + 1
        operators.append(op_id)
        rows.append(group_row(op_id, root_id, f"/{root_id}/{op_id}/", 1, now))
        frontier = [(op_id, f"/{root_id}/{op_id}/")]
        for depth in range(2, 10):
            new_frontier = []
            for parent_id, parent_path in frontier:
                for _ in range(3):
                    if next_id > TOTAL:
                        break
                    gid, next_id = next_id, next_id + 1
                    path = f"{parent_path}{gid}/"
                    rows.append(group_row(gid, parent_id, path, depth, now))
                    new_frontier.append((gid, path))
                    if depth == 5 and depth5 is None:
                        depth5 = gid
            frontier = new_frontier
    with db.engine.begin() as conn:
        conn.execute(Group.__table__.insert(), rows)
    assert depth5 is not None
    return len(rows) + 1, depth5, operators[0]


def main() -> None:
    settings = Settings(data_dir=temp_dir("heron-bench-tree-"), admin_password="bench-password-123")  # type: ignore[arg-type]
    prepared = prepare(settings, announce_password=False)
    db = prepared.db
    with db.read() as session:
        root = groups.get_root(session)
        assert root is not None
        root_id = root.id
    start = time.perf_counter()
    count, depth5_id, first_operator = build_tree(db, root_id)
    with db.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        max_depth = conn.execute(select(func.max(Group.depth))).scalar_one()
    print(f"built {count:,} groups, max depth {max_depth}, in {time.perf_counter() - start:.1f} s")

    with db.read() as session:
        depth5 = session.get(Group, depth5_id)
        assert depth5 is not None
        # An actor rooted at the first operator: visibility adds its own range condition.
        operator = session.get(Group, first_operator)
        assert operator is not None
        actor = Actor("api_user", 1, "bench", (Role(operator.id, operator.path, frozenset({"OBSERVER"})),))
        timings: list[float] = []
        for i in range(300):
            t0 = time.perf_counter()
            page = groups.list_groups(session, actor, parent_ids=[depth5_id], deep=True, with_total=True, limit=100)
            paths = groups.ancestors_of_many(session, actor, page.groups)
            data = wire.group_page(page.groups, paths, page.leaves)
            if i >= 20:
                timings.append(time.perf_counter() - t0)
        print(f"subtree of a depth-5 group: {len(data)} groups on the first page, total {page.total}")
        print("  list first page + exact total (service + wire shape):", describe_ms(timings))
        target("p95 list subtree with total", percentile(timings, 95) * 1000, 20, "ms")
        plan = session.execute(
            text("EXPLAIN QUERY PLAN SELECT count(*) FROM groups WHERE path >= :lo AND path < :hi"),
            {"lo": depth5.path, "hi": subtree_upper_bound(depth5.path)},
        ).all()
        print("  query plan of the subtree range:", " | ".join(str(r[-1]) for r in plan))

    with db.read() as session:
        op = session.get(Group, first_operator)
        assert op is not None
        lo, hi = op.path, subtree_upper_bound(op.path)
        subtree = session.scalar(select(func.count()).select_from(Group).where(Group.path >= lo, Group.path < hi))
        target_parent = session.scalar(select(Group.id).where(Group.depth == 1, Group.id != first_operator).limit(1))
    assert target_parent is not None
    t0 = time.perf_counter()
    with db.write() as session:
        groups.update(session, SYSTEM, first_operator, parent_id=target_parent)
    moved = time.perf_counter() - t0
    with db.read() as session:
        op = session.get(Group, first_operator)
        assert op is not None and op.depth == 2
    print(f"  move a {subtree:,}-group subtree under another operator: {moved * 1000:.0f} ms (one UPDATE)")
    db.dispose()
