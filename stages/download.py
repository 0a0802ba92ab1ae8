"""DVC stage `download`: fill data/raw/<source> (generate synth or melodies, download
Da-TACOS, or index the user's audio folder in a manifest), and data/raw/<extra source> for
the extra corpus (data.extra) when there is one."""

from __future__ import annotations

from coverid.core.config import load_params
from coverid.core.stage import stage_main
from coverid.data.sources import fetch_source
from coverid.data.splits import extra_params


def main() -> None:
    """Run the step of params' data.source, then of data.extra.source."""
    params = load_params()
    extra = extra_params(params)
    for corpus in (params, extra) if extra is not None else (params,):
        fetch_source(corpus)


if __name__ == "__main__":
    stage_main(main)
