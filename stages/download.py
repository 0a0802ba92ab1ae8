"""DVC stage `download`: fill data/raw/<source> (generate synth, download Da-TACOS, or index
the user's audio folder in a manifest)."""

from __future__ import annotations

from coverid.core.config import load_params
from coverid.core.stage import stage_main
from coverid.data.sources import fetch_source


def main() -> None:
    """Run the step of params' data.source."""
    fetch_source(load_params())


if __name__ == "__main__":
    stage_main(main)
