"""Evaluation: scoring a split, the pointing game, the deletion test, familiarity fitting."""
