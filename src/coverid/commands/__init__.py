"""Sub-commands of the `coverid` CLI, one module each (see coverid.cli)."""
