"""POST /essays/import: .docx, PDF and text files become essays; unsafe or oversized files are
refused with a clear problem and nothing is created."""

from __future__ import annotations

import pytest

from tests.documents import docx_bytes, encrypted_pdf_bytes, pdf_bytes, zip_bomb_docx
from tests.fakes import assert_problem, join, make_assignment, make_class, register

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


async def upload(client, account, name: str, data: bytes, media: str = "application/octet-stream", **form):
    return await client.post("/api/v1/essays/import", headers=account.headers,
                             files={"file": (name, data, media)}, data={k: str(v) for k, v in form.items()})


async def my_essay_count(client, account) -> int:
    r = await client.get("/api/v1/essays", headers=account.headers, params={"limit": 100})
    return len(r.json()["items"])


@pytest.mark.parametrize("name, data, media", [
    ("essay.docx", docx_bytes(["Homework builds habits.", "", "It also <script>alert(1)</script> costs time."]), DOCX),
    ("essay.pdf", pdf_bytes([["Homework builds habits."], ["It also <script>alert(1)</script> costs time."]]),
     "application/pdf"),
    ("essay.txt", "\ufeffHomework builds habits.\r\n\r\nIt also <script>alert(1)</script> costs time.\r\n"
                  .encode("utf-8"), "text/plain"),
    ("essay.txt", "Homework builds habits.\nIt also <script>alert(1)</script> costs time.".encode("utf-16"),
     "text/plain"),
])
async def test_a_file_becomes_an_essay_with_its_paragraphs(client, name, data, media) -> None:
    student = await register(client, "student")
    r = await upload(client, student, name, data, media)
    assert r.status_code == 201, r.text
    essay = r.json()
    assert essay["title"] == "essay"
    assert essay["text"] == "Homework builds habits.\nIt also <script>alert(1)</script> costs time."
    stored = await client.get(f"/api/v1/essays/{essay['id']}", headers=student.headers)
    assert stored.json()["text"] == essay["text"] and stored.json()["word_count"] == 8


async def test_an_imported_assignment_essay_is_visible_to_the_classs_teacher(client) -> None:
    teacher, student, outsider = (await register(client, "teacher"), await register(client, "student"),
                                  await register(client, "student"))
    cls = await make_class(client, teacher)
    await join(client, student, cls["join_code"])
    assignment = await make_assignment(client, teacher, cls["id"])
    r = await upload(client, student, "draft.docx", docx_bytes(["My draft."]), DOCX,
                     title="Draft one", assignment_id=assignment["id"])
    assert r.status_code == 201, r.text
    assert (r.json()["title"], r.json()["assignment_id"]) == ("Draft one", assignment["id"])
    seen = await client.get(f"/api/v1/essays/{r.json()['id']}", headers=teacher.headers)
    assert seen.status_code == 200 and seen.json()["text"] == "My draft."
    # A student outside the class cannot file an essay under its assignment.
    assert_problem(await upload(client, outsider, "x.txt", b"Text.", "text/plain", assignment_id=assignment["id"]),
                   404, "not_found")


@pytest.mark.parametrize("name, data, media, status, code", [
    ("essay.pdf", b"Just some text pretending.", "application/pdf", 415, "file_mismatch"),
    ("essay.docx", pdf_bytes([["A PDF named .docx"]]), DOCX, 415, "file_mismatch"),
    ("essay.txt", docx_bytes(["zip posing as text"]), "text/plain", 415, "file_mismatch"),
    ("essay.exe", b"MZ\x90\x00", "application/octet-stream", 415, "unsupported_file"),
    ("essay.docx", b"PK\x03\x04 not really a zip", DOCX, 415, "unsupported_file"),
    ("essay.pdf", encrypted_pdf_bytes(), "application/pdf", 422, "encrypted_file"),
    ("essay.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512), DOCX, 422, "encrypted_file"),
    ("essay.txt", b"caf\xe9 latin-1", "text/plain", 415, "bad_encoding"),
    ("essay.txt", b"   \n\n  ", "text/plain", 422, "empty_file"),
    ("essay.pdf", pdf_bytes([[]]), "application/pdf", 422, "empty_file"),
])
async def test_files_that_are_not_what_they_claim_or_cannot_be_read_are_refused(
        client, name, data, media, status, code) -> None:
    student = await register(client, "student")
    assert_problem(await upload(client, student, name, data, media), status, code)
    assert await my_essay_count(client, student) == 0


async def test_zip_bombs_and_oversized_files_are_refused_before_they_are_expanded(client, settings) -> None:
    student = await register(client, "student")
    assert_problem(await upload(client, student, "bomb.docx", zip_bomb_docx(64 << 20), DOCX), 413, "upload_too_large")
    big = b"x" * (settings.max_upload_bytes + 1)
    assert_problem(await upload(client, student, "big.txt", big, "text/plain"), 413, "upload_too_large")
    assert await my_essay_count(client, student) == 0


async def test_text_and_page_limits_answer_413(client, settings) -> None:
    student = await register(client, "student")
    words = ("word " * (settings.max_essay_chars // 5 + 10)).encode()
    assert_problem(await upload(client, student, "long.txt", words, "text/plain"), 413, "essay_too_large")
    many = pdf_bytes([["page"]] * (settings.max_upload_pages + 1))
    assert_problem(await upload(client, student, "many.pdf", many, "application/pdf"), 413, "too_many_pages")
    assert await my_essay_count(client, student) == 0


async def test_an_upload_larger_than_the_json_body_limit_is_accepted_on_import_only(client, settings) -> None:
    import io
    import os
    import zipfile

    student = await register(client, "student")
    # A .docx with a picture: its text is short, the file is over the JSON body limit.
    out = io.BytesIO(docx_bytes(["An essay with a photo in it."]))
    with zipfile.ZipFile(out, "a", zipfile.ZIP_STORED) as docx:
        docx.writestr("word/media/photo.bin", os.urandom(settings.max_body_bytes + 256 * 1024))
    data = out.getvalue()
    assert settings.max_body_bytes < len(data) < settings.max_upload_bytes
    r = await client.post("/api/v1/essays", headers=student.headers, json={"title": "t", "text": "x" * len(data)})
    assert_problem(r, 413, "payload_too_large")
    r = await upload(client, student, "photo.docx", data, DOCX)
    assert r.status_code == 201, r.text
    assert r.json()["text"] == "An essay with a photo in it."


async def test_imports_beyond_the_per_user_hourly_limit_answer_429_and_create_nothing(settings) -> None:
    """IMPORTS_PER_USER_PER_HOUR: each import is a document parse on the replica's CPU-work lane;
    one user's files must not fill it. Other users keep their own allowance."""
    import httpx

    from serve_app.app import create_app

    application = create_app(settings.model_copy(update={"imports_per_user_per_hour": 2}))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            greedy, other = await register(client, "student"), await register(client, "student")
            for n in range(2):
                r = await upload(client, greedy, f"draft{n}.txt", b"A draft.", "text/plain")
                assert r.status_code == 201, r.text
            over = await upload(client, greedy, "draft3.txt", b"A draft.", "text/plain")
            body = assert_problem(over, 429, "rate_limited")
            assert int(over.headers["retry-after"]) > 0 and body["status"] == 429
            assert await my_essay_count(client, greedy) == 2
            assert (await upload(client, other, "mine.txt", b"Mine.", "text/plain")).status_code == 201
