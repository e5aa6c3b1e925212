"""Class export: CSV and JSON hold the class's essays and nothing else (no password hashes, no other
class's data); CSV cells that a spreadsheet would run as formulas are neutralised."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest

from tests.fakes import Account, join, make_assignment, make_class, make_essay, register

API = "/api/v1"


async def _export(client: httpx.AsyncClient, teacher: Account, class_id: str, fmt: str) -> httpx.Response:
    r = await client.get(f"{API}/classes/{class_id}/export", params={"format": fmt}, headers=teacher.headers)
    assert r.status_code == 200, r.text
    return r


@pytest.fixture(scope="module")
async def two_classes(client: httpx.AsyncClient) -> dict[str, Any]:
    teacher_x, teacher_y = await register(client, "teacher"), await register(client, "teacher")
    cx, cy = await make_class(client, teacher_x, "Class X"), await make_class(client, teacher_y, "Class Y")
    alice = await register(client, "student", name="Alice X")
    bob = await register(client, "student", name="Bob X")
    yuri = await register(client, "student", name="Yuri Y")
    await join(client, alice, cx["join_code"])
    await join(client, bob, cx["join_code"])
    await join(client, yuri, cy["join_code"])
    ax, ay = await make_assignment(client, teacher_x, cx["id"]), await make_assignment(client, teacher_y, cy["id"])
    x_essays = [await make_essay(client, alice, ax["id"], text="Alice argues for homework."),
                await make_essay(client, bob, ax["id"], text="Bob argues against it.")]
    y_essay = await make_essay(client, yuri, ay["id"], text="Secret text of class Y.")
    private = await make_essay(client, alice, text="Alice's private draft.")  # in no class
    return {"teacher_x": teacher_x, "class_x": cx, "x_essays": x_essays, "y_essay": y_essay,
            "private": private, "yuri": yuri}


async def test_json_export_holds_exactly_the_class_essays(client: httpx.AsyncClient, two_classes: dict[str, Any]) -> None:
    r = await _export(client, two_classes["teacher_x"], two_classes["class_x"]["id"], "json")
    assert r.headers["content-type"].startswith("application/json")
    assert "attachment" in r.headers["content-disposition"]
    body = r.json()
    assert body["class"]["id"] == two_classes["class_x"]["id"]
    assert {e["essay_id"] for e in body["essays"]} == {e["id"] for e in two_classes["x_essays"]}
    by_id = {e["essay_id"]: e for e in body["essays"]}
    for essay in two_classes["x_essays"]:
        row = by_id[essay["id"]]
        assert row["text"] == essay["text"] and row["student_id"] == essay["owner_id"]
        assert row["word_count"] == essay["word_count"]
        assert {"feedback_counts", "scores", "total_points"} <= row.keys()


async def test_csv_export_holds_exactly_the_class_essays(client: httpx.AsyncClient, two_classes: dict[str, Any]) -> None:
    r = await _export(client, two_classes["teacher_x"], two_classes["class_x"]["id"], "csv")
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {row["essay_id"] for row in rows} == {e["id"] for e in two_classes["x_essays"]}
    assert {row["student_name"] for row in rows} == {"Alice X", "Bob X"}
    assert {"feedback_total", "total_points", "title", "word_count"} <= set(rows[0])


@pytest.mark.parametrize("fmt", ["csv", "json"])
async def test_export_leaks_no_secrets_and_no_other_class_data(
    client: httpx.AsyncClient, two_classes: dict[str, Any], fmt: str
) -> None:
    text = (await _export(client, two_classes["teacher_x"], two_classes["class_x"]["id"], fmt)).text
    assert "argon2" not in text and "password" not in text.lower()
    for leaked in (two_classes["y_essay"]["id"], "Secret text of class Y", two_classes["yuri"].email, "Yuri Y",
                   two_classes["private"]["id"], "private draft"):
        assert leaked not in text


@pytest.mark.parametrize("payload", ["=HYPERLINK(\"http://evil.example\",\"x\")", "+1+2", "-2+3", "@SUM(A1)",
                                     "\t=1+1", "\r=1+1"])
async def test_csv_export_neutralises_formula_cells(client: httpx.AsyncClient, payload: str) -> None:
    teacher = await register(client, "teacher")
    cls = await make_class(client, teacher)
    student = await register(client, "student", name=payload.strip() or "x")
    await join(client, student, cls["join_code"])
    assignment = await make_assignment(client, teacher, cls["id"])
    r = await client.post(f"{API}/essays", json={"title": payload, "assignment_id": assignment["id"]},
                          headers=student.headers)
    assert r.status_code == 201, r.text
    stored_title = r.json()["title"]
    rows = list(csv.reader(io.StringIO((await _export(client, teacher, cls["id"], "csv")).text)))
    cells = [cell for row in rows[1:] for cell in row]
    assert "'" + stored_title in cells
    for cell in cells:
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
