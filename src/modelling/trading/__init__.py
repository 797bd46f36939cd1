"""Judging signals as trades: a cost-aware backtest on the labels' own barriers."""
