"""Check a competition folder in seconds, before any long step: every problem of its tables at once.

    python -m src.check --comp=input/ecg-synth-comp       # run_all.sh's first step; the Stage II kernel's too
    python -m src.check --comp=bhf-data-science-centre-ecg-challenge

Errors (exit 1, all listed): train.csv or sample_submission.csv missing or unreadable, a column of sample_submission.csv
missing from train.csv, label values other than 0/1/empty, duplicate ids, no train/ or test/ folder. Ids without an
image are not errors: every stage skips and lists them the same way (src.sources.validate_competition).
"""
from __future__ import annotations

import dataclasses

from .config import find_input, parse_args
from .sources import require_valid_competition


@dataclasses.dataclass
class CheckConfig:
    comp: str  # competition folder (slug or path) holding train.csv, sample_submission.csv, train/ and test/


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_args(CheckConfig, argv)
    try:
        root = find_input(cfg.comp)
    except FileNotFoundError as e:
        raise SystemExit(f"[check] --comp: {e}") from None
    rep = require_valid_competition(root, "check")
    print(f"[check] {root}: {rep['n_train']} train and {rep['n_test']} test ids, tables valid; "
          f"{len(rep['skipped'])} id(s) without an image will be skipped")
    return rep


if __name__ == "__main__":
    main()
