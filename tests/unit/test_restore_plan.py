"""How a tenant's archive is cut into pg_restore runs of one owner each (infra.db.restore_plan),
over listings as PostgreSQL 16's `pg_restore --list` prints them."""

from __future__ import annotations

from infra.db.restore_plan import RestorePlan, parse_listing, plan_restore

# `pg_restore --list --verbose` of a SCHEMA-mode tenant: auth_service's `accounts` (granted to
# backend_service), backend_service's `orders` with a foreign key to it, a type and a function.
LISTING = """\
;
; Archive created at 2026-12-06 18:51:39 UTC
;
; Selected TOC Entries:
;
2563; 0 0 ENCODING - ENCODING\x20
2564; 0 0 STDSTRINGS - STDSTRINGS\x20
2565; 0 0 SEARCHPATH - SEARCHPATH\x20
2566; 1262 16389 DATABASE - tenants platform
2567; 0 0 ACL - DATABASE tenants platform
;\tdepends on: 2566
6; 2615 16392 SCHEMA - tenant_x platform
2568; 0 0 ACL - SCHEMA tenant_x platform
;\tdepends on: 6
851; 1247 16417 TYPE tenant_x mood backend_service
;\tdepends on: 6
220; 1255 16421 FUNCTION tenant_x f(integer, text[]) backend_service
;\tdepends on: 6
217; 1259 16394 TABLE tenant_x accounts auth_service
;\tdepends on: 6
2569; 0 0 COMMENT tenant_x TABLE accounts auth_service
;\tdepends on: 217
2570; 0 0 ACL tenant_x TABLE accounts auth_service
;\tdepends on: 217
216; 1259 16393 SEQUENCE tenant_x accounts_id_seq auth_service
;\tdepends on: 217 6
219; 1259 16403 TABLE tenant_x orders backend_service
;\tdepends on: 6
2571; 0 0 ACL tenant_x TABLE orders backend_service
;\tdepends on: 219
218; 1259 16402 SEQUENCE tenant_x orders_id_seq backend_service
;\tdepends on: 6 219
2572; 0 0 SEQUENCE OWNED BY tenant_x orders_id_seq backend_service
;\tdepends on: 218
2405; 2604 16406 DEFAULT tenant_x orders id backend_service
;\tdepends on: 218 219 219
2558; 0 16394 TABLE DATA tenant_x accounts auth_service
;\tdepends on: 217
2560; 0 16403 TABLE DATA tenant_x orders backend_service
;\tdepends on: 219
2573; 0 0 SEQUENCE SET tenant_x accounts_id_seq auth_service
;\tdepends on: 216
2574; 0 0 SEQUENCE SET tenant_x orders_id_seq backend_service
;\tdepends on: 218
2409; 2606 16401 CONSTRAINT tenant_x accounts accounts_pkey auth_service
;\tdepends on: 217
2412; 2606 16409 CONSTRAINT tenant_x orders orders_pkey backend_service
;\tdepends on: 219
2410; 1259 16415 INDEX tenant_x orders_amount_idx backend_service
;\tdepends on: 219
2413; 2606 16410 FK CONSTRAINT tenant_x orders orders_account_fkey backend_service
;\tdepends on: 217 219 2409
"""
PRE_DATA = [6, 2568, 851, 220, 217, 2569, 2570, 216, 219, 2571, 218, 2572, 2405]
DATA = [2558, 2560, 2573, 2574]
POST_DATA = [2409, 2412, 2410, 2413]


def section(listing: str, ids: list[int]) -> str:
    """`pg_restore --list --section=...`: the lines of those ids, without dependencies."""
    lines = {entry.dump_id: entry.line for entry in parse_listing(listing)}
    return "".join(f"{lines[i]}\n" for i in ids)


def plan(listing: str, sections: tuple[list[int], list[int], list[int]]) -> RestorePlan:
    return plan_restore(listing, [section(listing, ids) for ids in sections])


def shape(restore: RestorePlan) -> list[list[tuple[str, list[int]]]]:
    return [
        [(run.owner, [entry.dump_id for entry in run.entries]) for run in step]
        for step in restore.steps
    ]


def test_entries_carry_their_owner_and_dependencies() -> None:
    entries = {entry.dump_id: entry for entry in parse_listing(LISTING)}

    assert entries[2413].owner == "backend_service"
    assert entries[2413].dependencies == (217, 219, 2409)
    assert entries[220].description == "FUNCTION tenant_x f(integer, text[]) backend_service"
    assert entries[2563].owner == ""


def test_each_owner_restores_its_entries_in_as_few_runs_as_the_dependencies_allow() -> None:
    restore = plan(LISTING, (PRE_DATA, DATA, POST_DATA))

    assert shape(restore) == [
        [("backend_service", [851, 220, 219, 2571, 218, 2572, 2405])],
        [("auth_service", [217, 2569, 2570, 216])],
        # The rows: one step, each service's run at once.
        [("auth_service", [2558, 2573]), ("backend_service", [2560, 2574])],
        [("auth_service", [2409])],
        # The foreign key after the primary key it references, of the other service.
        [("backend_service", [2412, 2410, 2413])],
    ]
    assert restore.tables == 2


def test_the_storage_itself_and_what_is_in_no_section_are_left_out() -> None:
    restore = plan(LISTING, (PRE_DATA, DATA, POST_DATA))

    restored = {entry.dump_id for step in restore.steps for run in step for entry in run.entries}
    # The schema, its grants (revoked on a frozen source), the database and the fixed state.
    assert restored.isdisjoint({6, 2568, 2566, 2567, 2563, 2564, 2565})
    assert restored == set(PRE_DATA + DATA + POST_DATA) - {6, 2568}


def test_a_run_holds_back_what_depends_on_another_owner() -> None:
    listing = """\
10; 1259 1 TABLE tenant_x a backend_service
11; 1259 2 TABLE tenant_x b auth_service
12; 1259 3 VIEW tenant_x v backend_service
;\tdepends on: 11
13; 1259 4 TABLE tenant_x c backend_service
"""

    restore = plan(listing, ([10, 11, 12, 13], [], []))

    assert shape(restore) == [
        [("backend_service", [10, 13])],
        [("auth_service", [11])],
        [("backend_service", [12])],
    ]


def test_a_grant_goes_with_the_latest_section_it_depends_on_and_data_runs_wait_on_each_other() -> (
    None
):
    listing = """\
10; 1259 1 TABLE tenant_x a backend_service
20; 0 1 TABLE DATA tenant_x a backend_service
;\tdepends on: 10
21; 0 2 BLOBS - BLOBS auth_service
;\tdepends on: 20
22; 0 0 ACL - LARGE OBJECT 7 auth_service
;\tdepends on: 21
30; 1259 5 INDEX tenant_x a_idx backend_service
;\tdepends on: 10
"""

    restore = plan(listing, ([10, 22], [20, 21], [30]))

    assert shape(restore) == [
        [("backend_service", [10])],
        [("backend_service", [20])],
        [("auth_service", [21, 22])],
        [("backend_service", [30])],
    ]
    assert restore.steps[0][0].use_list() == "10; 1259 1 TABLE tenant_x a backend_service\n"
