"""SAIMP trainer: train and judge a 4-class market-signal classifier from market candles."""
