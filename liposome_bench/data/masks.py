"""A particle's mask where none is given: ``derive_mask``."""

from __future__ import annotations

import numpy as np


def derive_mask(image) -> np.ndarray:
    """Segment the particle at the centre of ``image``.

    Used by the readers where no mask is given (they set
    ``Particle.mask_derived``). The method, for a particle image with a
    surround of background around it (thesis section 3):

    1. scale intensities to the 0.5-99.5 percentile range and smooth with a
       Gaussian (sigma = max(1, side / 64) px) against shot noise;
    2. take the background level as the median of the image border, and the
       absolute deviation from it, so dark membranes on light ice and bright
       particles on dark stain are both found;
    3. threshold the deviation with Otsu's method, close gaps in the membrane
       ring (disk of radius max(1, side / 40) px) and fill holes, so a
       vesicle's ring becomes its whole disc;
    4. keep the connected region containing the centre, or the one nearest
       to it, and fill its holes.

    Parameters
    ----------
    image : array, 2-D

    Returns
    -------
    mask : bool array of ``image``'s shape; all False when nothing stands
        out from the background (a flat image).
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu
    from skimage.morphology import disk

    img = np.asarray(image, dtype=np.float32)
    height, width = img.shape
    lo, hi = np.percentile(img, [0.5, 99.5])
    empty = np.zeros(img.shape, dtype=bool)
    if not hi > lo:
        return empty
    img = np.clip((img - lo) / (hi - lo), 0.0, 1.0)
    side = min(height, width)
    smooth = ndi.gaussian_filter(img, sigma=max(1.0, side / 64))
    border = np.concatenate([smooth[0], smooth[-1], smooth[1:-1, 0], smooth[1:-1, -1]])
    deviation = np.abs(smooth - np.median(border))
    if not deviation.max() > deviation.min():
        return empty
    foreground = deviation > threshold_otsu(deviation)
    radius = max(1, int(round(side / 40)))
    # Pad before closing so regions touching the border are not eroded.
    padded = np.pad(foreground, radius)
    padded = ndi.binary_closing(padded, structure=disk(radius))
    foreground = ndi.binary_fill_holes(padded[radius:-radius, radius:-radius])
    labels, n = ndi.label(foreground)
    if n == 0:
        return empty
    cy, cx = (height - 1) / 2, (width - 1) / 2
    centre = labels[int(round(cy)), int(round(cx))]
    if centre == 0:
        yy, xx = np.nonzero(labels)
        nearest = np.argmin((yy - cy) ** 2 + (xx - cx) ** 2)
        centre = labels[yy[nearest], xx[nearest]]
    return ndi.binary_fill_holes(labels == centre)
