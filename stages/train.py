"""DVC stage: train the encoder -> data/models/encoder, reports/train.json, training curve."""

from coverid.config import load_params
from coverid.stage import stage_main


def main() -> None:
    from coverid.train import run_stage

    run_stage(load_params())


if __name__ == "__main__":
    stage_main(main)
