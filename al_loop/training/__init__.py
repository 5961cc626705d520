"""Training: the fine-tuning loop (:mod:`.trainer`, torch) and metrics (:mod:`.metrics`, no torch).

Import the submodules directly; this package module imports nothing, so
``al_loop.training.metrics`` stays usable in processes that never load torch.
"""
