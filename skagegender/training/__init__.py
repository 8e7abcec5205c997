"""Training the shipped recipes: the fine-tuned SFace layer, its frozen maps, the compact
network, the heads.

Everything here is for *making* models; predicting never imports this package (nor
torch, which training the fine-tuned layer needs: ``pip install "skagegender[train]"``).
"""

from ._augment import degrade_photo
from ._compact import COMPACT_SIZE, CompactModel, shrink_crops, train_compact
from ._deep import (
    DEPTHS,
    DeepModel,
    aligned_crops,
    augment_crop,
    sface_torch,
    train_deep,
    training_views,
)
from ._finetune import LAYER_BATCH_SIZE, FineTunedLayer, train_finetuned_layer
from ._maps import cached_rows, frozen_maps
from ._train import (
    CALIBRATION_SHARE,
    RECIPES,
    TrainingSource,
    calibration_split,
    check_sources,
    embed_training_data,
    fit_recipe,
    layer_training_rows,
    make_recipe_embedder,
    repeated_rows,
    stack_training_data,
)

__all__ = [
    "CALIBRATION_SHARE",
    "COMPACT_SIZE",
    "DEPTHS",
    "LAYER_BATCH_SIZE",
    "RECIPES",
    "CompactModel",
    "DeepModel",
    "FineTunedLayer",
    "TrainingSource",
    "aligned_crops",
    "augment_crop",
    "cached_rows",
    "calibration_split",
    "check_sources",
    "degrade_photo",
    "embed_training_data",
    "fit_recipe",
    "frozen_maps",
    "layer_training_rows",
    "make_recipe_embedder",
    "repeated_rows",
    "sface_torch",
    "shrink_crops",
    "stack_training_data",
    "train_compact",
    "train_deep",
    "train_finetuned_layer",
    "training_views",
]
