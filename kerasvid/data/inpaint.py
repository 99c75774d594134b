"""Actor removal on frames: box masks, inpainting and Poisson blending (numpy + OpenCV; no TensorFlow).

The image-level half of the conjugate samples of the action/context factorization (supplement Sec. 1); the record
tool is `kerasvid.data.conjugates`, the training pairs `kerasvid.data.conjugate_pairs`. For one frame:

1. `box_mask`: the union of the (clipped, non-empty) boxes of a frame;
2. fill: OpenCV Telea fast-marching inpainting (`fill="telea"`, the supplement's ref. [7]), Navier-Stokes
   (`fill="ns"`), or any callable `fill(frame, mask) -> frame` (e.g. a Keras image-completion model, the
   supplement's GLCIC);
3. blend: Poisson blending (`cv2.seamlessClone`, the supplement's ref. [5]) of the filled region into the frame over
   the mask dilated by `band` pixels; pixels farther than `band` from every box are left exactly as they were.

Boxes are `(ymin, xmin, ymax, xmax)`, normalised to [0, 1] like the records' `region/bbox/*` (or in pixels with
`units="pixels"`).
"""
import numpy as np

FILLS = ("telea", "ns")
BLENDS = ("poisson", "none")
UNITS = ("normalized", "pixels")


def clip_boxes(boxes, height, width, units="normalized"):
    """Converts boxes to integer pixel rectangles inside the frame; drops the empty ones.

    Args:
        boxes: array-like `[n, 4]` of `(ymin, xmin, ymax, xmax)`.
        height, width: the frame size.
        units: "normalized" ([0, 1] of the frame size) or "pixels".

    Returns:
        int array `[m, 4]` of `(y0, x0, y1, x1)` with `0 <= y0 < y1 <= height`, `0 <= x0 < x1 <= width`
        (half-open; a box covers every pixel it touches). Boxes with no area inside the frame are dropped.
    """
    if units not in UNITS:
        raise ValueError(f"`units` must be one of {UNITS}, got units={units!r}")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"Boxes must be finite numbers, got {boxes.tolist()}")
    if units == "normalized":
        boxes = boxes * np.array([height, width, height, width], np.float64)
    y0 = np.clip(np.floor(boxes[:, 0]), 0, height)
    x0 = np.clip(np.floor(boxes[:, 1]), 0, width)
    y1 = np.clip(np.ceil(boxes[:, 2]), 0, height)
    x1 = np.clip(np.ceil(boxes[:, 3]), 0, width)
    out = np.stack([y0, x0, y1, x1], axis=-1).astype(np.int64)
    return out[(out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])]


def box_mask(height, width, boxes, units="normalized"):
    """Boolean `[height, width]` mask of the union of `boxes` (clipped to the frame, empty boxes ignored)."""
    mask = np.zeros((height, width), bool)
    for y0, x0, y1, x1 in clip_boxes(boxes, height, width, units):
        mask[y0:y1, x0:x1] = True
    return mask


def _cv2():
    """OpenCV (inpainting and Poisson blending), an optional dependency: `pip install kerasvid[conjugates]`."""
    try:
        import cv2
    except ImportError as err:
        raise ImportError("Conjugate samples need OpenCV for inpainting and Poisson blending: "
                          "pip install 'kerasvid[conjugates]' (opencv-python-headless)") from err
    return cv2


def _dilate(mask, radius):
    cv2 = _cv2()

    if radius <= 0:
        return mask.copy()
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def _fill(frame, mask, fill, radius):
    cv2 = _cv2()

    if callable(fill):
        filled = np.asarray(fill(frame.copy(), mask.copy()))
        if filled.shape != frame.shape:
            raise ValueError(f"The fill callable must return a frame of shape {frame.shape}, got {filled.shape}")
        return np.clip(np.rint(filled), 0, 255).astype(np.uint8) if filled.dtype != np.uint8 else filled
    if fill not in FILLS:
        raise ValueError(f"`fill` must be one of {FILLS} or a callable, got fill={fill!r}")
    method = cv2.INPAINT_TELEA if fill == "telea" else cv2.INPAINT_NS
    return cv2.inpaint(frame, mask.astype(np.uint8) * 255, radius, method)


def poisson_blend(frame, filled, region):
    """Poisson-blends `filled` into `frame` over the boolean `region` (`cv2.seamlessClone`, NORMAL_CLONE).

    The frames are padded (reflection) so that a region touching the frame border still has a boundary, and every
    pixel outside `region` is returned unchanged. A region under 3 pixels on a side (which `cv2.seamlessClone`
    rejects, e.g. a 1-pixel box with `band=0`) is blended by solving the same equation directly.
    """
    cv2 = _cv2()

    if not region.any():
        return frame.copy()
    ys, xs = np.nonzero(region)
    if ys.max() - ys.min() < 2 or xs.max() - xs.min() < 2:
        # cv2.seamlessClone raises (cv2.error) when the region's bounding box is under 3 pixels on a side, e.g. a
        # 1-pixel box with band=0: solve the same Poisson equation directly.
        return _poisson_blend_thin(frame, filled, region)
    pad = 2
    padded_frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    padded_fill = cv2.copyMakeBorder(filled, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    padded_region = np.pad(region, pad).astype(np.uint8) * 255
    ys, xs = np.nonzero(padded_region)
    # seamlessClone places the mask's bounding box so that its centre lands on `center` (rounded up for even sizes).
    center = (int((xs.min() + xs.max() + 1) // 2), int((ys.min() + ys.max() + 1) // 2))
    blended = cv2.seamlessClone(padded_fill, padded_frame, padded_region, center, cv2.NORMAL_CLONE)
    blended = blended[pad:-pad, pad:-pad]
    return np.where(region[..., None], blended, frame)


def _poisson_blend_thin(frame, filled, region, tolerance=1e-3, max_iterations=1000):
    """Poisson blending of a region whose bounding box is at most 2 pixels thick, by Jacobi iteration.

    The discrete Poisson equation of Perez et al. (SIGGRAPH 2003, Eq. 7) with the 4-neighbourhood: for every pixel
    `p` of the region, `4 f_p - sum_{q in N_p, q in region} f_q = sum_{q in N_p, q not in region} frame_q +
    sum_{q in N_p} (filled_p - filled_q)`; a neighbour outside the frame is its mirror image inside it (a zero
    normal derivative at the frame border). In a region at most 2 pixels thick every pixel is next to a fixed value,
    so each step shrinks the error by a factor bounded away from 1 (about 0.9 in the worst case, a 2-pixel strip
    along the frame border): it converges in at most a few hundred steps, whatever the region's length.
    """
    pad = ((1, 1), (1, 1), (0, 0))

    def neighbour_sum(a):
        a = np.pad(a, pad, mode="symmetric")
        return a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:]

    g = filled.astype(np.float64)
    guidance = (4.0 * g - neighbour_sum(g))[region]
    f = frame.astype(np.float64)
    for _ in range(max_iterations):
        update = (neighbour_sum(f)[region] + guidance) / 4.0
        change = np.max(np.abs(update - f[region]))
        f[region] = update
        if change < tolerance:
            break
    blended = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    return np.where(region[..., None], blended, frame)


def conjugate_frame(frame, boxes, fill="telea", blend="poisson", band=4, radius=5, units="normalized"):
    """Removes the boxes' pixels from one frame, fills them and blends the fill in.

    Args:
        frame: uint8 `[H, W, 3]`.
        boxes: `[n, 4]` boxes `(ymin, xmin, ymax, xmax)`; boxes outside the frame are clipped, empty ones skipped.
        fill: "telea", "ns" or a callable `fill(frame, mask) -> frame` (mask: bool `[H, W]`, True = to fill).
        blend: "poisson" (`cv2.seamlessClone` over the mask dilated by `band`) or "none" (paste the fill).
        band: width in pixels of the blending band around the boxes.
        radius: inpainting radius of the OpenCV fills.
        units: "normalized" or "pixels".

    Returns:
        `(conjugate, mask)`: the uint8 frame and the bool `[H, W]` box mask. Pixels farther than `band` from
        every box (and, with blend="none", every pixel outside the boxes) are unchanged.
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"`frame` must be uint8 [H, W, 3], got dtype {frame.dtype} and shape {frame.shape}")
    if blend not in BLENDS:
        raise ValueError(f"`blend` must be one of {BLENDS}, got blend={blend!r}")
    if not isinstance(band, int) or band < 0:
        raise ValueError(f"`band` must be an integer >= 0, got band={band!r}")
    frame = np.ascontiguousarray(frame)
    mask = box_mask(frame.shape[0], frame.shape[1], boxes, units)
    if not mask.any():
        return frame.copy(), mask
    filled = _fill(frame, mask, fill, radius)
    filled = np.where(mask[..., None], filled, frame)  # the fill only replaces the removed pixels
    if blend == "none":
        return filled, mask
    return poisson_blend(frame, np.ascontiguousarray(filled), _dilate(mask, band)), mask


def conjugate_clip(frames, boxes_per_frame, **kwargs):
    """`conjugate_frame` on every frame of a clip.

    Args:
        frames: uint8 `[T, H, W, 3]`.
        boxes_per_frame: a sequence of T box arrays `[n_t, 4]` (n_t may be 0), or a dict frame index -> boxes
            (frames not in it are left unchanged).
        **kwargs: `conjugate_frame` arguments.

    Returns:
        `(conjugates, masks)`: uint8 `[T, H, W, 3]` and bool `[T, H, W]`.
    """
    frames = np.asarray(frames)
    if isinstance(boxes_per_frame, dict):
        boxes_per_frame = [boxes_per_frame.get(t, ()) for t in range(len(frames))]
    if len(boxes_per_frame) != len(frames):
        raise ValueError(f"Need one box list per frame ({len(frames)} frames), got {len(boxes_per_frame)}")
    pairs = [conjugate_frame(f, b, **kwargs) for f, b in zip(frames, boxes_per_frame)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
