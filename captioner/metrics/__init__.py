"""Caption metrics: the corpus scores evaluation reports (pycocoevalcap) and the sentence scores self-critical training rewards."""
