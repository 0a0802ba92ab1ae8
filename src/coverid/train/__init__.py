"""Training: tf.data sampling and augmentation, devices, the Lookahead optimiser, the fit loop."""
