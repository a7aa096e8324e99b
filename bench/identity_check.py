"""The identity result against the ground truth, computed in SQL on the benchmark's database.

For every true person, the profiles holding any of their ids: more than one is a *split* person.
For every profile, the true people whose ids it holds: more than one is an *over-merged* profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from bench.generate import ORG_ID, REGION
from profilehub.store.database import Database

truth_metadata = sa.MetaData()
truth = sa.Table(
    "bench_truth",
    truth_metadata,
    sa.Column("person", sa.BigInteger, nullable=False),
    sa.Column("id_type", sa.String(100), nullable=False),
    sa.Column("value", sa.String(512), nullable=False),
)


@dataclass(frozen=True)
class IdentityResult:
    people: int  # true people with at least one id stored
    profiles: int  # master profiles in the store
    profiles_per_person: float
    split_people: int
    over_merged_profiles: int

    def line(self) -> str:
        return (
            f"identity: {self.people:,} true people -> {self.profiles:,} profiles "
            f"({self.profiles_per_person:.4f} per person), split people {self.split_people:,}, "
            f"over-merged profiles {self.over_merged_profiles:,}"
        )


def load_truth(db: Database, path: Path) -> None:
    with db.engine.begin() as conn:
        truth_metadata.drop_all(conn)
        truth_metadata.create_all(conn)
        batch: list[dict[str, object]] = []
        with path.open() as f:
            for line in f:
                person, id_type, value = line.rstrip("\n").split("\t")
                batch.append({"person": int(person), "id_type": id_type, "value": value})
                if len(batch) >= 20_000:
                    conn.execute(truth.insert(), batch)
                    batch = []
        if batch:
            conn.execute(truth.insert(), batch)
        conn.exec_driver_sql("CREATE INDEX ix_bench_truth ON bench_truth (id_type, value)")


def check_identity(db: Database, truth_path: Path) -> IdentityResult:
    load_truth(db, truth_path)
    joined = (
        "SELECT DISTINCT t.person AS person, p.ucid AS ucid FROM bench_truth t JOIN profile_ids p "
        f"ON p.org_id = {ORG_ID} AND p.region = '{REGION}' AND p.id_type = t.id_type AND p.value = t.value"
    )
    with db.engine.connect() as conn:
        people, held = conn.exec_driver_sql(
            f"SELECT COUNT(DISTINCT person), COUNT(DISTINCT ucid) FROM ({joined}) j"
        ).one()
        split = conn.exec_driver_sql(
            f"SELECT COUNT(*) FROM (SELECT person FROM ({joined}) j GROUP BY person HAVING COUNT(*) > 1) s"
        ).scalar_one()
        over = conn.exec_driver_sql(
            f"SELECT COUNT(*) FROM (SELECT ucid FROM ({joined}) j GROUP BY ucid HAVING COUNT(*) > 1) s"
        ).scalar_one()
        profiles = conn.exec_driver_sql(
            f"SELECT COUNT(*) FROM profiles WHERE org_id = {ORG_ID} AND merged_into IS NULL"
        ).scalar_one()
    return IdentityResult(int(people), int(profiles), held / people if people else 0.0, int(split), int(over))
