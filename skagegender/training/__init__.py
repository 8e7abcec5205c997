"""Training the shipped recipes: the fine-tuned SFace layer, its frozen maps, the heads.

Everything here is for *making* models; predicting never imports this package (nor
torch, which training the fine-tuned layer needs: ``pip install "skagegender[train]"``).
"""

from ._augment import degrade_photo
from ._deep import (
    DEPTHS,
    DeepModel,
    aligned_crops,
    augment_crop,
    sface_torch,
    train_deep,
    training_views,
)
from ._finetune import FineTunedLayer, train_finetuned_layer
from ._maps import frozen_maps
from ._train import (
    CALIBRATION_SHARE,
    RECIPES,
    fit_recipe,
    layer_training_rows,
    make_recipe_embedder,
)

__all__ = [
    "CALIBRATION_SHARE",
    "DEPTHS",
    "RECIPES",
    "DeepModel",
    "FineTunedLayer",
    "aligned_crops",
    "augment_crop",
    "degrade_photo",
    "fit_recipe",
    "frozen_maps",
    "layer_training_rows",
    "make_recipe_embedder",
    "sface_torch",
    "train_deep",
    "train_finetuned_layer",
    "training_views",
]
