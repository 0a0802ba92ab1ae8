"""DVC stage `download`: fill data/raw/<source> (generate synth, download Da-TACOS, or index
the user's audio folder in a manifest)."""

from __future__ import annotations

from pathlib import Path

from coverid.core import paths
from coverid.core.config import load_params
from coverid.core.errors import CoveridError
from coverid.core.stage import stage_main


def main() -> None:
    """Run the step of params' data.source."""
    params = load_params()
    data, out = params["data"], paths.raw_dir(params)
    if data["source"] == "synth":
        from coverid.data.synth import generate_corpus

        generate_corpus(out, data["synth"], params["seed"])
    elif data["source"] == "datacos":
        from coverid.data.datacos import METADATA, download

        cfg = data["datacos"]
        download(out, cfg["subset"], [METADATA, *cfg["features"]], cfg["base_url"], cfg["checksums"],
                 retries=cfg["retries"], retry_wait_s=cfg["retry_wait_s"], timeout_s=cfg["timeout_s"],
                 from_dir=cfg["from_dir"], keep_archives=cfg["keep_archives"])
    elif data["source"] == "audio":
        from coverid.core.io import write_json
        from coverid.data.dataset import audio_manifest

        cfg = data["audio"]
        write_json(out / "manifest.json", audio_manifest(Path(cfg["dir"]), cfg["extensions"]))
    else:
        raise CoveridError(f"params data.source: unknown source {data['source']!r} (synth | datacos | audio)")


if __name__ == "__main__":
    stage_main(main)
