"""Regenerate src/zoo/results/*.csv (zoo's model cards) from the reference library's published results.

Usage: python tools/sync_results.py [RESULTS_DIR [OUT_DIR]]

RESULTS_DIR (default ../shared/reference/results) holds the reference library's imagenet-results.csv and
inference-cost.csv. Only the rows of what zoo registers are kept: an ImageNet result for a NAME.TAG zoo has
(zoo.list_models(pretrained=True)), an inference cost for a NAME it has, at an image size one of that
name's kept results or cfgs uses. Rerun after adding models; the rows keep the publisher's columns and order.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import zoo  # noqa: E402

RESULTS = "imagenet-results.csv"
COSTS = "inference-cost.csv"


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """A CSV file's header and rows."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """header and rows as CSV at path, with Unix line ends."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(text.getvalue(), encoding="utf-8")
    print(f"{path}: {len(rows)} rows")


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else ROOT.parent / "shared" / "reference" / "results"
    out_dir = Path(argv[1]) if len(argv) > 1 else ROOT / "src" / "zoo" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    tagged = set(zoo.list_models(pretrained=True, include_tags=True))
    names = set(zoo.list_models())

    header, rows = read_rows(source / RESULTS)
    kept = [row for row in rows if row[0] in tagged]
    write_rows(out_dir / RESULTS, header, kept)

    # the sizes a card can be shown at: those its results were measured at and those its cfgs name
    sizes = {(row[0].split(".")[0], row[1]) for row in kept}
    for name in names:
        for cfg in zoo.api.default_zoo().get_spec(name).default_cfgs:
            for size in (cfg.input_size, cfg.test_input_size):
                if size is not None:
                    sizes.add((name, str(size[1])))
    header, rows = read_rows(source / COSTS)
    write_rows(out_dir / COSTS, header, [row for row in rows if (row[0], row[1]) in sizes])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
