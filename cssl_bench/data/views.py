"""Build the view recipe a training recipe asks for (``augment.views``)."""

from __future__ import annotations

from dataclasses import dataclass

from cssl_bench.config import Recipe
from cssl_bench.data.augment import (
    ATOMIC_BY_NAME,
    Blur,
    ColorJitter,
    HFlip,
    LeaveOneOut,
    MultiCrop,
    Pipeline,
    ResizedCrop,
    Rotation,
    SingleView,
    Solarize,
    Texture,
    TwoViews,
    ssl_pipeline,
)


@dataclass
class SharedRotationTwoViews:
    """Two views that share one rotation (LooC Table 1's "MoCo + Rotation (same for q and k)")."""

    inner: TwoViews
    rotation: Rotation

    def __call__(self, img, rng):
        views, params = self.inner(img, rng)
        p = self.rotation.sample(rng, img.shape[-2], img.shape[-1])
        for k in views:
            views[k] = self.rotation.apply(views[k], p)
            params[k]["rotation"] = p
        return views, params


def build_view_recipe(r: Recipe):
    a, size = r.augment, r.data.image_size
    if a.views == "single":
        return SingleView(Pipeline([ResizedCrop(size, tuple(a.crop_scale)), HFlip()]))
    if a.views == "multicrop":
        small = max(8, int(round(size * a.small_size / 224))) if size < 224 else a.small_size
        large = ssl_pipeline(size, a.large_crop_scale, a.color, a.blur_p, a.solarize_p)
        smallp = ssl_pipeline(small, a.small_crop_scale, a.color, a.blur_p, a.solarize_p)
        return MultiCrop(large, smallp, a.n_large, a.n_small)
    if a.views == "looc":
        base_steps = [ResizedCrop(size, tuple(a.crop_scale)), HFlip()]
        atomics = []
        for name in a.looc_augment:
            if name == "color":
                atomics.append(ColorJitter(**a.color))
            elif name == "texture":
                atomics.append(Texture(p=a.texture_p, transfer=a.texture_transfer))
            else:
                atomics.append(ATOMIC_BY_NAME[name]())
        post = Pipeline([Blur(p=a.blur_p)] if a.blur_p > 0 else [])
        return LeaveOneOut(Pipeline(base_steps), atomics, post, variant=a.variance_heads)
    extra = [Rotation()] if a.rotation == "independent" else []
    first = ssl_pipeline(size, a.crop_scale, a.color, a.blur_p, a.solarize_p, extra)
    b2 = a.blur_p if a.blur_p2 is None else a.blur_p2
    s2 = a.solarize_p if a.solarize_p2 is None else a.solarize_p2
    second = ssl_pipeline(size, a.crop_scale, a.color, b2, s2, extra)
    two = TwoViews(first, second)
    if a.rotation == "same":
        return SharedRotationTwoViews(two, Rotation())
    return two


__all__ = ["build_view_recipe", "SharedRotationTwoViews", "Solarize", "Texture"]
