"""`coverid download da-tacos`: fetch (from Zenodo, a mirror or a local folder), verify and
unzip Da-TACOS archives."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `download` sub-command."""
    p = sub.add_parser("download", help="download a dataset",
                       description="Download a dataset. Unset options take their values from "
                                   "the params file's data.datacos section.")
    datasets = p.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    d = datasets.add_parser("da-tacos", help="Da-TACOS features and metadata (Zenodo 3520368, 4717628)",
                            description="Download Da-TACOS archives (md5-verified) and unzip them: "
                                        "OUT/da-tacos_<subset>_subset_<feature>/W_*/P_*.h5 and "
                                        "OUT/da-tacos_metadata/. With --from DIR, the zips already in "
                                        "DIR are verified and unpacked instead.")
    d.add_argument("--subset", choices=("benchmark", "coveranalysis"), help="default: data.datacos.subset")
    d.add_argument("--feature", action="append", dest="features", metavar="FEATURE",
                   help="crema, hpcp, chroma_cens (also key, madmom, mfcc, tags); repeatable "
                        "(default: params data.datacos.features)")
    d.add_argument("--out", type=Path, default=Path("data/raw/datacos"), help="output folder")
    source = d.add_mutually_exclusive_group()
    source.add_argument("--base-url",
                        help="mirror or test server replacing https://zenodo.org (same "
                             "/records/<id>/files/ paths); a URL with {name} (and {record}) is a "
                             "template, e.g. 'https://host/datacos/{name}' for a flat mirror; a "
                             "folder or file:// URL acts as --from")
    source.add_argument("--from", dest="from_dir", type=Path, metavar="DIR",
                        help="read the zips you already downloaded from DIR/<archive>.zip (flat, as "
                             "Zenodo names them) instead of downloading: verified (md5) and "
                             "unpacked, never modified")
    d.add_argument("--checksums", type=Path,
                   help="manifest replacing the built-in md5 table: JSON {name: md5} or 'md5  name' lines")
    d.add_argument("--no-metadata", action="store_true", help="skip da-tacos_metadata.zip")
    d.add_argument("--keep-archives", action="store_true", help="keep the zips in OUT/.archives")
    d.add_argument("--params", type=Path, default=Path("params.yaml"),
                   help="params file holding the settings not given here (default params.yaml)")
    d.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    """Download the requested archives and print where they went."""
    from coverid.core.config import project_params
    from coverid.data.datacos import METADATA, download

    cfg = project_params(args.params)["data"]["datacos"]
    features = args.features or cfg["features"]
    # a source given on the command line replaces both of params' (base_url, from_dir)
    if args.base_url or args.from_dir:
        base_url, from_dir = args.base_url, args.from_dir
    else:
        base_url, from_dir = cfg["base_url"], cfg["from_dir"]
    dirs = download(
        args.out,
        args.subset or cfg["subset"],
        ([] if args.no_metadata else [METADATA]) + list(features),
        base_url=base_url,
        checksums=args.checksums or cfg["checksums"],
        from_dir=from_dir,
        retries=cfg["retries"], retry_wait_s=cfg["retry_wait_s"], timeout_s=cfg["timeout_s"],
        keep_archives=args.keep_archives or cfg["keep_archives"],
    )
    for d in dirs:
        print(d)
    return 0
