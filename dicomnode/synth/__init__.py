"""Deterministic synthetic data (MR phantoms, WSI slides) for demo models and tests.

Everything here is synthetic and NOT FOR CLINICAL USE.
"""
