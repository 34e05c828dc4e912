"""CDR export formats: CSV (one header row, ISO times) and JSON (a list of objects)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterable

from esl.cdr import FIELDS, CallRecord


def to_csv(records: Iterable[CallRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(dataclasses.asdict(record))
    return buffer.getvalue()


def to_json(records: Iterable[CallRecord]) -> str:
    return json.dumps([dataclasses.asdict(r) for r in records], indent=2, ensure_ascii=False)
