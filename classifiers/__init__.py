"""Prompt classifiers for the guard: which requests are about a forget target, and which of their words name it.

- :mod:`classifiers.text`: frozen sentence encoder + scikit-learn head, long prompts read in windows.
- :mod:`classifiers.terms`: forget-target names and aliases found in text (case, diacritics, typos, possessives).
- :mod:`classifiers.image`: identity matching of images against the forget set's reference images.
- :mod:`classifiers.multimodal`: all of them combined, conformally calibrated per modality; ``flag(requests)``.
- :mod:`classifiers.calibration`: split-conformal p-values and thresholds on held-out negatives.
- :mod:`classifiers.training`: fit everything on profiles, measure error rates and robustness.

Importing this package is light; torch, transformers and scikit-learn load with the modules that need them.
"""

COMBINES = ("bonferroni", "split")
"""How :class:`classifiers.multimodal.MultimodalClassifier` shares the false-positive rate between an image request's
text and image detectors (the first is the default). Here, not there, so command lines offer it without loading
torch."""
