"""Networks, checkpoints, model cards and predictors for the land-cover mapper."""
