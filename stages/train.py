"""DVC stage: train the encoder -> data/models/encoder, reports/train.json, training curve."""

from coverid.core.config import load_params
from coverid.core.stage import stage_main


def main() -> None:
    from coverid.train.fit import run_stage

    run_stage(load_params())


if __name__ == "__main__":
    stage_main(main)
