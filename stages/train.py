"""DVC stage: train the encoder -> data/models/encoder, reports/train.json, training curve."""

from coverid.core.config import load_params
from coverid.core.stage import stage_main


def main() -> None:
    """Check params.yaml, then train (TensorFlow is imported only once the params are good)."""
    params = load_params()
    from coverid.train.fit import run_stage

    run_stage(params)


if __name__ == "__main__":
    stage_main(main)
