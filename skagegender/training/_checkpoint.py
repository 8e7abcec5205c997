"""The training state of a resumable torch run, kept in one file of a folder."""

from pathlib import Path

from .._utils import atomic_write
from ._finetune import _torch

#: File name of the training state in a checkpoint folder.
CHECKPOINT_FILE = "checkpoint.pt"
_STATE_KEYS = ("config", "model", "optimizer", "torch_rng")


class Checkpoint:
    """Saves and restores a network, its optimizer, torch's random state and counters.

    Parameters
    ----------
    folder : path or None
        Where ``checkpoint.pt`` is kept; None keeps nothing (:meth:`save` does nothing).
    config : str
        The run's data and settings (JSON); a saved state of another config is refused.
    """

    def __init__(self, folder, config):
        self.path = None if folder is None else Path(folder) / CHECKPOINT_FILE
        self.config = config

    def restore(self, net, optimizer, random_state):
        """Load a saved state into ``net`` and ``optimizer``; returns its counters.

        Without a saved state torch is seeded with ``random_state`` and the counters
        are ``{}``. Loaded with ``weights_only=True`` (tensors and plain values only).

        Raises
        ------
        ValueError
            For a state saved by a run of other data or settings.
        """
        torch = _torch()
        if self.path is None or not self.path.is_file():
            torch.manual_seed(random_state)
            return {}
        state = torch.load(self.path, weights_only=True)
        if state.get("config") != self.config:
            raise ValueError(f"{self.path} is a checkpoint of other data or settings: "
                             "use another checkpoint_folder")
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        return {key: value for key, value in state.items() if key not in _STATE_KEYS}

    def save(self, net, optimizer, **counters):
        """Write the state atomically (counters: plain values, e.g. ``step=120``)."""
        if self.path is None:
            return
        torch = _torch()
        state = {"config": self.config, "model": net.state_dict(),
                 "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                 **counters}
        atomic_write(self.path, lambda f: torch.save(state, f), make_parents=True)
