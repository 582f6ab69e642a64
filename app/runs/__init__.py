"""A training run's folder (`rundir`) and a finished run loaded back from it (`trained`)."""
