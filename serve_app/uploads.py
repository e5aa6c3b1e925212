"""Turn an uploaded .docx, .pdf or .txt file into essay text, refusing what is not safe to read.

The file's bytes decide its kind (a ZIP holding `word/document.xml`, `%PDF-`, or UTF-8/UTF-16
text); a name or content type that claims another kind is refused, so a renamed executable or a
PDF posing as text never reaches a parser it was not made for. Paragraphs are kept as lines (the
editor's paragraphs are lines). Every limit is checked before the work it bounds:

- the upload's size (`MAX_UPLOAD_BYTES`, by the HTTP layer) -> 413 `upload_too_large`;
- a .docx's expanded size and entry count, from the ZIP directory before anything is inflated
  (zip bombs) -> 413 `upload_too_large`; Python's zipfile never inflates past a declared size;
- a PDF's page count (`MAX_UPLOAD_PAGES`) -> 413 `too_many_pages`; encrypted PDFs and
  password-protected Office files (an OLE container, not a ZIP) -> 422 `encrypted_file`;
- the text's length (`MAX_ESSAY_CHARS`) -> 413 `essay_too_large`, checked as pages are read.

Parsing is CPU work: callers run `extract_text` in a worker thread, never on the event loop.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import PurePath

from serve_app.errors import AppError, PayloadTooLarge, ValidationFailed

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # legacy .doc, and Office files with a password
KINDS = {"docx", "pdf", "txt"}
CLAIMS = {
    ".docx": "docx", ".pdf": "pdf", ".txt": "txt", ".text": "txt", ".md": "txt",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/pdf": "pdf", "text/plain": "txt", "text/markdown": "txt",
}


class UnsupportedFile(AppError):
    code, status, title = "unsupported_file", 415, "Unsupported file"


@dataclass(frozen=True)
class UploadLimits:
    max_chars: int
    max_pages: int = 200
    max_expanded_bytes: int = 32 * 1024 * 1024
    max_zip_entries: int = 2000


@dataclass(frozen=True)
class Extracted:
    text: str
    kind: str
    pages: int | None = None


def extract_text(data: bytes, *, filename: str | None, content_type: str | None, limits: UploadLimits) -> Extracted:
    """The essay text of an uploaded file, or an `AppError` saying why not."""
    kind = sniff(data)
    claimed = claimed_kind(filename, content_type)
    if claimed is not None and claimed != kind:
        raise UnsupportedFile(f"the file is {_name(kind)} but was sent as {_name(claimed)}", code="file_mismatch")
    if kind == "docx":
        text, pages = _docx_text(data, limits), None
    elif kind == "pdf":
        text, pages = _pdf_text(data, limits)
    else:
        text, pages = _plain_text(data), None
    text = _tidy(text)
    _check_chars(text, limits)
    return Extracted(text=text, kind=kind, pages=pages)


def sniff(data: bytes) -> str:
    """The file's kind from its bytes."""
    if data.startswith(b"%PDF-"):
        return "pdf"
    if data.startswith(OLE_MAGIC):
        raise ValidationFailed("the file is password-protected or a legacy .doc: save it as .docx without a "
                               "password, or as PDF", code="encrypted_file")
    if data.startswith(b"PK\x03\x04"):
        return "docx"
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnsupportedFile("the file is neither text, .docx nor PDF")
    return "txt"


def claimed_kind(filename: str | None, content_type: str | None) -> str | None:
    """What the name (first) or the content type says the file is; None when neither says."""
    suffix = PurePath(filename or "").suffix.lower()
    if suffix:
        if suffix not in CLAIMS:
            raise UnsupportedFile(f"'{suffix}' files are not supported: upload .docx, .pdf or .txt")
        return CLAIMS[suffix]
    media = (content_type or "").split(";")[0].strip().lower()
    return CLAIMS.get(media)


def _name(kind: str) -> str:
    return {"docx": "a .docx document", "pdf": "a PDF", "txt": "plain text"}[kind]


def _docx_text(data: bytes, limits: UploadLimits) -> str:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError) as exc:
        raise UnsupportedFile("the .docx file is damaged (not a readable ZIP archive)") from exc
    if len(entries) > limits.max_zip_entries:
        raise PayloadTooLarge(f"the .docx holds {len(entries)} parts; the limit is {limits.max_zip_entries}",
                              code="upload_too_large")
    expanded = sum(entry.file_size for entry in entries)
    if expanded > limits.max_expanded_bytes:
        raise PayloadTooLarge(f"the .docx expands to {expanded} bytes; the limit is {limits.max_expanded_bytes}",
                              code="upload_too_large")
    if "word/document.xml" not in archive.namelist():
        raise UnsupportedFile("the ZIP file is not a Word document (no word/document.xml)", code="file_mismatch")
    import docx  # python-docx; its XML parser does not resolve entities

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises many kinds for a malformed package
        raise UnsupportedFile(f"the .docx file cannot be read: {type(exc).__name__}") from exc
    lines: list[str] = []
    size = 0
    for paragraph in document.paragraphs:
        lines.append(paragraph.text)
        size += len(paragraph.text) + 1
        if size > limits.max_chars:
            break
    return "\n".join(lines)


def _pdf_text(data: bytes, limits: UploadLimits) -> tuple[str, int]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ValidationFailed("the PDF is encrypted: remove its password and upload it again",
                                   code="encrypted_file")
        pages = len(reader.pages)
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise UnsupportedFile("the PDF is damaged and cannot be read") from exc
    if pages > limits.max_pages:
        raise PayloadTooLarge(f"the PDF has {pages} pages; the limit is {limits.max_pages}", code="too_many_pages")
    chunks: list[str] = []
    size = 0
    for page in reader.pages:
        try:
            chunk = page.extract_text() or ""
        except Exception as exc:  # pypdf's content-stream parser raises many kinds on broken pages
            raise UnsupportedFile(f"a page of the PDF cannot be read: {type(exc).__name__}") from exc
        chunks.append(_pdf_paragraphs(chunk))
        size += len(chunk)
        if size > limits.max_chars:
            break
    return "\n".join(chunks), pages


_SENTENCE_END = re.compile(r"[.!?:;\"'\u201d\u2019)\]]\s*$")


def _pdf_paragraphs(page: str) -> str:
    """PDF text breaks lines where the page did; a line that does not end a sentence continues
    into the next one, and a blank line always ends a paragraph."""
    paragraphs: list[str] = []
    current = ""
    for line in page.splitlines():
        line = line.strip()
        if not line:
            if current:
                paragraphs.append(current)
            current = ""
            continue
        if current.endswith("-") and line[:1].islower():
            current = current[:-1] + line  # a word hyphenated across lines
        else:
            current = f"{current} {line}" if current else line
        if _SENTENCE_END.search(line):
            paragraphs.append(current)
            current = ""
    if current:
        paragraphs.append(current)
    return "\n".join(paragraphs)


def _plain_text(data: bytes) -> str:
    for bom, encoding in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if data.startswith(bom):
            data, chosen = data[len(bom):], encoding
            break
    else:
        chosen = "utf-8"
    try:
        return data.decode(chosen)
    except UnicodeDecodeError as exc:
        raise UnsupportedFile("the text file is not UTF-8 (or UTF-16 with a byte-order mark): save it as "
                              "UTF-8 and upload it again", code="bad_encoding") from exc


def _tidy(text: str) -> str:
    # One paragraph per line, as the editor keeps them; control characters other than line breaks
    # and tabs are dropped (they render as nothing and confuse offsets).
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text)
    lines = [line.rstrip() for line in text.split("\n")]
    return "\n".join(line for line in lines if line.strip())


def _check_chars(text: str, limits: UploadLimits) -> None:
    if len(text) > limits.max_chars:
        raise PayloadTooLarge(f"the file's text is over {limits.max_chars} characters", code="essay_too_large")
    if not text.strip():
        raise ValidationFailed("the file holds no text (a scanned PDF needs OCR first)", code="empty_file")
