"""Export collected episode shards as a Minari dataset (see :mod:`dreamgym.minari_export`).

    python -m training.export_minari --episodes data/takecover --dataset-id dreamgym/takecover/random-v0 \
        [--data-path minari_datasets] [--overwrite true] [--jpeg true]

Then ``MINARI_DATASETS_PATH=minari_datasets python -c "import minari; minari.load_dataset('dreamgym/...')"``.
A bad folder, no shards, a corrupt shard, a malformed or existing dataset id (without ``--overwrite``) or a
missing ``minari`` package exit 1 with one line naming the problem. Needs ``pip install 'dreamgym[minari]'``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from dreamgym.cli_args import parse_args
from dreamgym.data import ShardError
from dreamgym.minari_export import MinariExportError, export_minari


@dataclass(frozen=True)
class ExportMinariArgs:
    episodes: str
    """folder of episode shards written by training.collect"""
    dataset_id: str
    """Minari dataset id, (namespace/)name-v<version>, e.g. dreamgym/takecover/random-v0"""
    data_path: str | None = None
    """Minari's datasets folder; default: $MINARI_DATASETS_PATH, else ~/.minari/datasets"""
    overwrite: bool = False
    """replace an existing dataset of that id"""
    jpeg: bool = False
    """store frames as lossy JPEG (Minari's jpeg_encoding: much smaller) instead of raw uint8"""
    author: str | None = None
    author_email: str | None = None
    code_permalink: str | None = None
    description: str | None = None
    """the dataset's description; default: one saying what the observations and actions are"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(ExportMinariArgs, argv, description=__doc__)
    try:
        folder = export_minari(
            args.episodes, args.dataset_id, data_path=args.data_path, overwrite=args.overwrite,
            jpeg_encoding=args.jpeg, author=args.author, author_email=args.author_email,
            code_permalink=args.code_permalink, description=args.description,
        )  # fmt: skip
    except (MinariExportError, ShardError, ImportError) as err:
        print(f"export_minari: {err}", file=sys.stderr)
        return 1
    print(f"wrote Minari dataset {args.dataset_id} to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
