import pytest

from cssl_bench import UserError
from cssl_bench.config import load_recipe, recipe_from_dict


def test_layers_and_overrides():
    r = load_recipe("moco-v2", "tiny")
    assert r.scale == "tiny" and r.model.backbone == "resnet18-w0.25" and r.data.image_size == 32
    r2 = load_recipe("moco-v2", "tiny", {"train": {"epochs": 7}}, ["optim.base_lr=0.5", "params.temperature=0.3"])
    assert r2.train.epochs == 7 and r2.optim.base_lr == 0.5 and r2.params["temperature"] == 0.3
    assert r2.lr == pytest.approx(0.5 * r2.train.batch_size / 256)
    p = load_recipe("moco-v2", "paper")
    assert p.model.backbone == "resnet50" and p.train.batch_size == 256 and p.optim.base_lr == 0.03


def test_hash_is_stable_and_ignores_operational_keys():
    a = load_recipe("simclr", "tiny")
    b = load_recipe("simclr", "tiny", {"data": {"workers": 5}, "train": {"log_every": 3}})
    c = load_recipe("simclr", "tiny", {"train": {"seed": 1}})
    assert a.hash() == b.hash() != c.hash()
    assert recipe_from_dict(a.to_dict()).hash() == a.hash()


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"train": {"bogus": 1}}, "unknown recipe key train.bogus"),
        ({"train": {"epochs": "ten"}}, "expected int"),
        ({"train": {"epochs": -1}}, "epochs must be >= 0"),
        ({"train": {"batch_size": 0}}, "batch size must be > 0"),
        ({"optim": {"name": "adam9"}}, "optim.name must be one of"),
        ({"nosection": {"a": 1}}, "unknown recipe section"),
        (
            {"augment": {"color": {"p_gray": 0.2, "gray_first": "yes"}}},
            "augment.color.gray_first must be true or false, got 'yes'",
        ),
    ],
)
def test_invalid_recipes(overrides, match):
    with pytest.raises(UserError, match=match):
        load_recipe("moco-v2", "tiny", overrides)


def test_unknown_method_and_scale():
    with pytest.raises(UserError, match="unknown method 'mocov9'; choose from"):
        load_recipe("mocov9", "tiny")
    with pytest.raises(UserError, match="unknown scale"):
        load_recipe("moco-v2", "huge")
