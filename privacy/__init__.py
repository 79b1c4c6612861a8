"""Differential privacy: the distributed noise stage of the codec, the accountant, the ledgers.

`rdp.py` and `noise.py` need numpy only, so a device can check the privacy a signed task
claims before it spends any; `accountant.py` is the coordinator's and uses `dp-accounting`.
"""
