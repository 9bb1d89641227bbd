from __future__ import annotations

import pytest

from zjulab.skillrouter import Skill

BODIES = {
    "pdf-merge": (
        "pdf-tools",
        "Work with PDF files.",
        "Merge several PDF documents into one file with pypdf; reorder and rotate pages.",
    ),
    "pdf-ocr": (
        "pdf-toolkit",
        "Work with PDF files.",
        "Run OCR on scanned PDF pages with tesseract so the text becomes searchable.",
    ),
    "pdf-forms": (
        "pdf-helper",
        "Work with PDF files.",
        "Fill interactive form fields of a PDF and flatten the form.",
    ),
    "img-resize": (
        "image-tools",
        "Process images.",
        "Resize photos and make thumbnails with Pillow keeping the aspect ratio.",
    ),
    "img-exif": (
        "image-utils",
        "Process images.",
        "Strip EXIF metadata such as GPS position from photos for privacy.",
    ),
    "log-nginx": (
        "log-tools",
        "Analyse logs.",
        "Parse nginx access logs and compute status code counts and latency percentiles.",
    ),
    "log-rotate": (
        "log-helper",
        "Analyse logs.",
        "Rotate and compress log files with logrotate so the disk does not fill up.",
    ),
    "mail-send": (
        "email-tools",
        "Send and process email.",
        "Send emails with attachments over SMTP with TLS using smtplib.",
    ),
}


def make_pool() -> list[Skill]:
    return [
        Skill(name=n, description=d, body=b, id=i, category=i.split("-")[0])
        for i, (n, d, b) in BODIES.items()
    ]


@pytest.fixture()
def pool() -> list[Skill]:
    return make_pool()
