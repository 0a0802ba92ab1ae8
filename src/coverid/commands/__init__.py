"""Sub-commands of the `coverid` CLI, one module each (see coverid.cli)."""

# --model of the commands that embed songs
MODEL_HELP = ("model dir or MLflow URI, e.g. models:/coverid-encoder@champion or models:/coverid-encoder/3 "
              "(default: the registry's champion when ./params.yaml names a tracking database "
              "that has one, else data/models/encoder)")
