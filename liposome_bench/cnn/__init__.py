"""Training LipNet CNNs on the stored folds: input modes, augmentation,
class balancing, early stopping, per-fold results.

For each fold of the dataset's stored folds (the same folds the SVM uses,
thesis section 8.1):

1. the training folds are split, stratified, into a fit part and a validation
   part (``validation_fraction``); the test fold is never looked at during
   training (the thesis's original code validated on its test set);
2. each epoch draws a class-balanced sample of the fit part
   (``balance``, section 4.8); the validation part and the test fold are
   never resampled;
3. the network sees each batch through a random augmentation layer
   (``augment``, section 5.5) that is part of the Keras training model, so it
   runs on the same device as the network and does nothing at inference;
4. the loss is cross-entropy with label smoothing 0.1 (section 5.2); training
   stops when the validation macro F1 (the score the SVM's grid search
   maximises; ``early_stopping="loss"``: the class-balanced validation loss)
   has not improved for ``patience`` epochs, and the weights of the best
   epoch are kept (5.4); a fold whose best epoch is its last is flagged as
   possibly under-trained;
5. the model predicts class probabilities for the test fold, which are saved
   with the fold's training curve, timings and the model (``.keras``).

One module per step, each using only those above it:

``preprocess``  particle windows, the network inputs, the one keep-size scale
``augment``     the random affine augmentation layer and its fill mode
``balance``     the validation split, each epoch's draw, SMOTE, class weights
``device``      the device line, the precision policy, a quiet Keras start
``train``       ``train_fold``: one network, early-stopped
``runner``      ``run_cnn``: every fold, saved and resumable

This package re-exports their public names, so ``from liposome_bench.cnn
import train_fold`` keeps working. docs/cnn.md describes each option;
docs/performance.md the measured speed. Keras is imported inside the
functions, so importing this package loads no Keras.
"""

from liposome_bench.settings import (
    AUGMENTATIONS,
    BALANCE_METHODS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LEARNING_RATES,
    DEFAULT_PATIENCE,
    DEFAULT_VALIDATION_FRACTION,
    DEFAULT_WARMUP_EPOCHS,
    INPUT_MODES,
    INPUT_SCALES,
    OPTIMIZERS,
    CNNSettings,
    parse_augment,
    scaled_learning_rate,
)
from liposome_bench.cnn.preprocess import (
    KEEP_SIZE_QUANTILE,
    KeepSizeScale,
    check_choice,
    keep_size_scale,
    keeps_size,
    mask_window,
    particle_window,
    prepare_cnn_images,
    prepare_images,
    window_box,
    window_lengths,
)
from liposome_bench.cnn.augment import (
    ROTATION_DEGREES,
    SHEAR,
    SHIFT,
    ZOOM_IN,
    build_augmentation,
    fill_mode_of,
)
from liposome_bench.cnn.balance import (
    UNDERSAMPLE_DROP,
    EpochSampler,
    class_weights,
    smote_pool,
    split_validation,
)
from liposome_bench.cnn.device import (
    describe_device,
    filter_backend_noise,
    import_keras,
    list_devices_quietly,
    resolve_dtype_policy,
)
from liposome_bench.cnn.train import (
    LABEL_SMOOTHING,
    as_float32,
    lipnet_options,
    make_learning_rate,
    monitor_key,
    train_fold,
    validation_metrics,
)
from liposome_bench.cnn.runner import (
    fold_seed,
    make_cnn_settings,
    run_cnn,
    save_model,
    settings_from_record,
)

__all__ = [
    # settings (re-exported since 0.2.0: cnn.INPUT_MODES, ...)
    "AUGMENTATIONS",
    "BALANCE_METHODS",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_EPOCHS",
    "DEFAULT_LEARNING_RATES",
    "DEFAULT_PATIENCE",
    "DEFAULT_VALIDATION_FRACTION",
    "DEFAULT_WARMUP_EPOCHS",
    "INPUT_MODES",
    "INPUT_SCALES",
    "OPTIMIZERS",
    "CNNSettings",
    "parse_augment",
    "scaled_learning_rate",
    # preprocess
    "KEEP_SIZE_QUANTILE",
    "KeepSizeScale",
    "check_choice",
    "keep_size_scale",
    "keeps_size",
    "mask_window",
    "particle_window",
    "prepare_cnn_images",
    "prepare_images",
    "window_box",
    "window_lengths",
    # augment
    "ROTATION_DEGREES",
    "SHEAR",
    "SHIFT",
    "ZOOM_IN",
    "build_augmentation",
    "fill_mode_of",
    # balance
    "UNDERSAMPLE_DROP",
    "EpochSampler",
    "class_weights",
    "smote_pool",
    "split_validation",
    # device
    "describe_device",
    "filter_backend_noise",
    "import_keras",
    "list_devices_quietly",
    "resolve_dtype_policy",
    # train
    "LABEL_SMOOTHING",
    "as_float32",
    "lipnet_options",
    "make_learning_rate",
    "monitor_key",
    "train_fold",
    "validation_metrics",
    # runner
    "fold_seed",
    "make_cnn_settings",
    "run_cnn",
    "save_model",
    "settings_from_record",
]
