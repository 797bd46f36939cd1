"""Walk-forward evaluation: folds, one fold's training and judgement, pooling, report."""
