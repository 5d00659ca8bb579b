"""mobilenets.datasets: ImageFolder scanning and bad data, user datasets, the split, and the v2 transforms."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from digits import write_digits_folder
from PIL import Image

from mobilenets import create_model
from mobilenets.data import eval_transform, imagenet_categories
from mobilenets.datasets import (
    ImageFolderDataset,
    TransformedDataset,
    check_image_file,
    imagenet_wnids,
    make_datasets,
    mixup_cutmix,
    scan_image_folder,
    train_transform,
    val_transform,
)

ROOT = Path(__file__).resolve().parent.parent
CHELSEA = ROOT / "examples" / "chelsea.jpg"
LITE0_CFG = {"input_size": (3, 224, 224), "crop_pct": 0.875, "interpolation": "bicubic",
             "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def png(path: Path, size: tuple[int, int] = (8, 8), mode: str = "L", value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, value, value)).save(path)
    return path


def small_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 3) -> Path:
    for c in classes:
        for i in range(per_class):
            png(root / c / f"{i}.png", value=40 * i)
    return root


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_digits_folder(tmp_path_factory.mktemp("digits"), per_class=10)


# ---- scanning ------------------------------------------------------------------------------------------------------


def test_scan_digits_sorted_classes_and_labels(digits):
    train, _ = digits
    scan = scan_image_folder(train, min_classes=2)
    assert scan.classes == [str(d) for d in range(10)]
    assert len(scan.samples) == 80 and scan.skipped == []
    assert all(path.parent.name == scan.classes[label] for path, label in scan.samples)
    assert scan.targets == sorted(scan.targets)


def test_hidden_files_and_folders_are_skipped_nested_folders_read(tmp_path):
    root = small_folder(tmp_path / "data")
    png(root / "cat" / ".hidden.png")
    (root / "cat" / ".DS_Store").write_bytes(b"\0junk")
    png(root / ".cache" / "x.png")
    png(root / "dog" / "sub" / "deep.png")
    (root / "README.txt").write_text("files directly under the root are not samples")
    scan = scan_image_folder(root)
    assert scan.classes == ["cat", "dog"]
    assert sorted(p.name for p, _ in scan.samples) == ["0.png", "0.png", "1.png", "1.png", "2.png", "2.png", "deep.png"]


def test_every_bad_file_is_named_in_one_error(tmp_path):
    root = small_folder(tmp_path / "data", ("a", "b", "c"))
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    good = (root / "c" / "0.png").read_bytes()
    (root / "c" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "empty").mkdir()
    with pytest.raises(ValueError) as info:
        scan_image_folder(root)
    message = str(info.value)
    assert "4 file(s) or folder(s) cannot be used" in message and "on_bad='skip'" in message
    for name in ("notes.txt: not an image file", "broken.jpg: cannot read image header", "truncated.png:",
                 "empty: class folder holds no image files"):
        assert name in message, message
    assert "\n" not in message


def test_truncated_jpeg_refused_complete_one_with_trailing_data_kept(tmp_path):
    data = CHELSEA.read_bytes()
    root = small_folder(tmp_path / "data")
    (root / "cat" / "cut.jpg").write_bytes(data[: len(data) * 3 // 5])
    (root / "dog" / "trailer.jpg").write_bytes(data + b"appended by a phone camera" * 40)
    with pytest.raises(ValueError, match=r"1 file\(s\).*cut\.jpg: truncated or corrupt JPEG") as info:
        scan_image_folder(root)
    assert "trailer.jpg" not in str(info.value)
    assert check_image_file(CHELSEA) is None


def test_skip_lists_bad_files_warns_once_and_drops_empty_classes(tmp_path):
    root = small_folder(tmp_path / "data", ("a", "b", "c"))
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "empty").mkdir()
    with pytest.warns(UserWarning, match="skipped 2 file") as record:
        scan = scan_image_folder(root, on_bad="skip")
    assert len(record) == 1
    assert scan.classes == ["a", "b", "c"] and len(scan.samples) == 9
    assert sorted((p.name, why) for p, why in scan.skipped) == [
        ("empty", "class folder holds no image files"), ("notes.txt", "not an image file Pillow can read")]


def test_many_bad_files_first_ten_then_a_count(tmp_path):
    root = small_folder(tmp_path / "data")
    for i in range(13):
        (root / "cat" / f"bad{i:02d}.txt").write_text("x")
    with pytest.raises(ValueError, match=r"13 file\(s\).*bad09\.txt.*; and 3 more\.") as info:
        scan_image_folder(root)
    assert "bad10.txt" not in str(info.value)


def test_no_class_folders_and_single_class(tmp_path):
    flat = tmp_path / "flat"
    png(flat / "a.png")
    with pytest.raises(ValueError, match=r"no class folders \(it holds 1 file\(s\) directly"):
        scan_image_folder(flat)
    with pytest.raises(ValueError, match="no such directory"):
        scan_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="is not a directory"):
        scan_image_folder(flat / "a.png")
    one = small_folder(tmp_path / "one", ("only",))
    assert scan_image_folder(one).classes == ["only"]  # fine for validation
    with pytest.raises(ValueError, match=r"1 usable class folder\(s\) \(only\), at least 2 needed"):
        scan_image_folder(one, min_classes=2)
    with pytest.raises(ValueError, match="at least 2 needed"):
        make_datasets(one)
    with pytest.raises(ValueError, match="on_bad must be"):
        scan_image_folder(one, on_bad="ignore")


def test_every_class_empty_after_skipping(tmp_path):
    root = tmp_path / "data"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        (root / c / "x.txt").write_text("x")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"0 usable class folder\(s\) \(none\)"):
        scan_image_folder(root, on_bad="skip", min_classes=2)


@pytest.mark.skipif(not hasattr(os, "mkfifo") or sys.platform == "win32", reason="needs FIFOs and symlinks")
def test_fifo_symlink_loop_and_dangling_link_are_refused_without_blocking(tmp_path):
    root = small_folder(tmp_path / "data")
    os.mkfifo(root / "cat" / "pipe.png")
    (root / "cat" / "loop").symlink_to(root / "cat", target_is_directory=True)
    (root / "dog" / "gone.png").symlink_to(root / "nowhere.png")
    (root / "dog" / "linked.png").symlink_to(root / "cat" / "0.png")  # a link to a regular file is read
    with pytest.warns(UserWarning):
        scan = scan_image_folder(root, on_bad="skip")
    reasons = {p.name: why for p, why in scan.skipped}
    assert "FIFO" in reasons["pipe.png"]
    assert "symbolic link loop" in reasons["loop"]
    assert reasons["gone.png"] == "dangling symbolic link"
    assert "linked.png" in {p.name for p, _ in scan.samples}
    (root / "again").symlink_to(root / "cat", target_is_directory=True)  # one folder as two classes
    (root / "whole").symlink_to(root, target_is_directory=True)
    with pytest.warns(UserWarning):
        scan = scan_image_folder(root, on_bad="skip")
    assert scan.classes == ["again", "dog"]  # the first name (sorted) keeps the folder; "cat" is the same one
    reasons = {p.name: why for p, why in scan.skipped}
    assert "already scanned" in reasons["cat"] and "already scanned" in reasons["whole"]
    assert len({p.resolve() for p, _ in scan.samples}) == len(scan.samples) - 1  # linked.png is 0.png again


def test_oversized_images_refused_from_the_header(tmp_path, monkeypatch):
    root = small_folder(tmp_path / "data")
    png(root / "dog" / "big.png", size=(40, 40))
    monkeypatch.setenv("MOBILENETS_MAX_IMAGE_PIXELS", "100")
    with pytest.raises(ValueError, match=r"big\.png: image too large: 40x40 is 1,600 pixels"):
        scan_image_folder(root)
    assert check_image_file(root / "cat" / "0.png") is None


def test_folder_dataset_yields_images_and_transformed_tensors(digits):
    train, _ = digits
    scan = scan_image_folder(train)
    raw = ImageFolderDataset(scan)
    img, label = raw[15]
    assert isinstance(img, Image.Image) and img.size == (8, 8) and label == scan.samples[15][1]
    x, label2 = TransformedDataset(raw, val_transform(LITE0_CFG))[15]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and label2 == label
    assert len(raw) == 80 and raw.classes == scan.classes


# ---- make_datasets: splits, folders and user datasets --------------------------------------------------------------


def test_val_split_is_stratified_deterministic_and_disjoint(digits):
    train_dir, _ = digits
    train, val, classes = make_datasets(train_dir, val_split=0.25, seed=3)
    assert classes == [str(d) for d in range(10)]
    assert len(train) + len(val) == 80 and not set(train.indices) & set(val.indices)
    assert [val.targets.count(c) for c in range(10)] == [2] * 10  # 8 per class, 25 %
    assert sorted(train.targets) == sorted(c for c in range(10) for _ in range(6))
    again_train, again_val, _ = make_datasets(train_dir, val_split=0.25, seed=3)
    assert again_val.indices == val.indices and again_train.indices == train.indices
    assert make_datasets(train_dir, val_split=0.25, seed=4)[1].indices != val.indices
    image, label = val[0]
    assert isinstance(image, Image.Image) and label == val.targets[0]


def test_val_split_arguments(digits):
    train_dir, val_dir = digits
    with pytest.raises(ValueError, match="not both"):
        make_datasets(train_dir, val_dir, val_split=0.2)
    for bad in (0, 1, 1.5, True):
        with pytest.raises(ValueError, match="val_split must be a fraction"):
            make_datasets(train_dir, val_split=bad)


def test_val_folder_maps_classes_by_name(tmp_path):
    train_dir = small_folder(tmp_path / "train", ("a", "b", "c"))
    val_dir = small_folder(tmp_path / "val", ("c", "b"), per_class=1)  # a subset: labels by name
    train, val, classes = make_datasets(train_dir, val_dir)
    assert classes == ["a", "b", "c"] and sorted(val.targets) == [1, 2]
    assert {p.parent.name: label for p, label in val.samples} == {"b": 1, "c": 2}
    small_folder(tmp_path / "val2", ("a", "zebra"), per_class=1)
    with pytest.raises(ValueError, match="class folder.* the training data lacks: zebra"):
        make_datasets(train_dir, tmp_path / "val2")


class Pairs(torch.utils.data.Dataset):
    def __init__(self, labels, classes=None, image=None):
        self.labels = labels
        if classes is not None:
            self.classes = classes
        self.image = image if image is not None else torch.zeros(3, 8, 8, dtype=torch.uint8)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.image, self.labels[i]


def test_user_dataset_classes_and_lazy_label_check():
    train, val, classes = make_datasets(Pairs([0, 1, 2, 1], classes=["x", "y", "z"]))
    assert classes == ["x", "y", "z"] and val is None and train[3][1] == 1
    bad = Pairs([0, 1, 7, 1], classes=["x", "y", "z"])
    train, _, _ = make_datasets(bad)  # nothing is read up front
    assert train[1][1] == 1
    with pytest.raises(ValueError, match=r"train_data\[2\] has label 7, outside 0\.\.2 \(3 classes\)"):
        train[2]
    train, _, _ = make_datasets(Pairs([0, torch.tensor(1), np.int64(0)], classes=["x", "y"]))
    assert [train[i][1] for i in range(3)] == [0, 1, 0]
    with pytest.raises(ValueError, match=r"train_data\[0\] has label 0.5"):
        make_datasets(Pairs([0.5, 1], classes=["x", "y"]))[0][0]
    with pytest.raises(ValueError, match="expected a PIL image or a tensor"):
        make_datasets(Pairs([0, 1], classes=["x", "y"], image="photo.jpg"))[0][0]


def test_user_dataset_without_classes_reads_labels_once_and_splits():
    labels = [i % 3 for i in range(30)]
    train, val, classes = make_datasets(Pairs(labels), val_split=0.2, seed=1)
    assert classes == ["0", "1", "2"]
    assert sorted(val.targets) == [0, 0, 1, 1, 2, 2] and len(train) == 24
    with pytest.raises(ValueError, match=r"train_data\[1\] has label -1"):
        make_datasets(Pairs([0, -1, 1]))
    with pytest.raises(ValueError, match="training needs at least 2"):
        make_datasets(Pairs([0, 0]))
    with pytest.raises(TypeError, match="folder path or a map-style"):
        make_datasets(42)
    with pytest.raises(ValueError, match="differ from the training classes"):
        make_datasets(Pairs([0, 1], classes=["x", "y"]), Pairs([0], classes=["x", "q"]))


# ---- transforms ----------------------------------------------------------------------------------------------------


def _images() -> list[Image.Image]:
    photo = Image.open(CHELSEA)
    rgba = photo.convert("RGBA").resize((300, 200))
    rgba.putalpha(Image.linear_gradient("L").resize((300, 200)))
    return [photo, photo.convert("L"), photo.convert("P"), rgba, photo.resize((50, 120)), photo.rotate(90, expand=True)]


@pytest.mark.parametrize("cfg", [
    LITE0_CFG,
    {"input_size": (3, 192, 192), "crop_pct": 0.95, "interpolation": "bilinear",
     "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
    {"input_size": (3, 160, 160), "crop_pct": 1.0, "crop_mode": "squash", "interpolation": "bicubic"},
    {"input_size": (3, 128, 128), "crop_pct": 1.0, "crop_mode": "border"},
    {"input_size": (1, 96, 96), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
], ids=["lite0", "bilinear", "squash", "border", "grey"])
def test_val_transform_equals_eval_transform_on_pil_images(cfg):
    expected = eval_transform(cfg)  # one channel for the grey config, with RGB mean/std mapped to grey
    assert expected.in_chans == cfg["input_size"][0]
    transform = val_transform(cfg)
    for img in _images():
        got = transform(img)
        assert type(got) is torch.Tensor and got.dtype == torch.float32
        assert got.shape == expected.input_size
        assert torch.equal(got, expected(img)), (cfg, img.mode, img.size)


def test_val_transform_accepts_tensors_and_models():
    photo = Image.open(CHELSEA).convert("RGB")
    tensor = torch.from_numpy(np.array(photo)).permute(2, 0, 1).contiguous()
    model = create_model("efficientnet_lite0", pretrained=True)
    transform = val_transform(model)
    want = eval_transform(model)(photo)
    for x in (tensor, tensor.float() / 255):
        got = transform(x)
        assert got.shape == (3, 224, 224)
        assert (got - want).abs().max() < 0.05  # torch's antialiased resize, not Pillow's: within a few levels
        assert (got - want).abs().mean() < 0.005
    grey = val_transform({"input_size": (1, 64, 64)})(tensor)
    assert grey.shape == (1, 64, 64)
    rgb_from_grey = transform(tensor[:1])
    assert rgb_from_grey.shape == (3, 224, 224) and torch.equal(rgb_from_grey[0], rgb_from_grey[2])
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        transform(torch.zeros(2, 10, 10, dtype=torch.uint8))
    assert transform(torch.zeros(4, 10, 10, dtype=torch.uint8)).shape == (3, 224, 224)


@pytest.mark.parametrize("augment", ["none", "light", "rotate", "trivial", "randaugment"])
def test_train_transform_shapes_and_normalisation(digits, augment):
    torch.manual_seed(0)
    train_dir, _ = digits
    digit = ImageFolderDataset(scan_image_folder(train_dir))[0][0]
    assert digit.mode == "L"
    rgb = train_transform(LITE0_CFG, augment=augment)
    x = rgb(digit)
    assert type(x) is torch.Tensor and x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grey digits repeated over RGB
    assert x.min() >= -1 - 1e-6 and x.max() <= 1 + 1e-6 and x.max() > x.min()  # mean 0.5, std 0.5
    grey = train_transform(LITE0_CFG, augment=augment, in_chans=1, input_size=32)(digit)
    assert grey.shape == (1, 32, 32)
    white = Image.new("RGB", (64, 48), (255, 255, 255))
    if augment in ("none", "light"):  # geometry alone keeps a uniform image uniform: (1 - 0.5) / 0.5
        assert torch.equal(rgb(white), torch.ones(3, 224, 224))
    tensor_in = rgb(torch.full((1, 20, 20), 255, dtype=torch.uint8))
    assert tensor_in.shape == (3, 224, 224)


def test_train_transform_imagenet_normalisation_and_erasing():
    cfg = {"input_size": (3, 64, 64), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    white = Image.new("RGB", (80, 80), (255, 255, 255))
    x = train_transform(cfg, augment="light")(white)
    want = (1 - torch.tensor(cfg["mean"])) / torch.tensor(cfg["std"])
    assert torch.allclose(x.amax(dim=(1, 2)), want) and torch.allclose(x.amin(dim=(1, 2)), want)
    grey = train_transform(cfg, augment="light", in_chans=1)(white)  # grey_normalization of the RGB values
    assert grey.shape == (1, 64, 64) and torch.allclose(grey, torch.full_like(grey, (1 - 0.4488) / 0.2260), atol=1e-3)
    torch.manual_seed(1)
    erased = train_transform(cfg, augment="light", random_erasing=1.0)(white)
    assert (erased == 0).any() and (erased != 0).any()
    for bad in ({"augment": "heavy"}, {"random_erasing": 2.0}, {"input_size": 0}):
        with pytest.raises(ValueError):
            train_transform(cfg, **bad)


def test_mixup_cutmix_soft_labels():
    assert mixup_cutmix(10) is None
    images, labels = torch.rand(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 4, 5])
    for kwargs in ({"mixup": 0.2}, {"cutmix": 1.0}, {"mixup": 0.2, "cutmix": 1.0}):
        torch.manual_seed(0)
        mixed, soft = mixup_cutmix(10, **kwargs)(images, labels)
        assert mixed.shape == images.shape and soft.shape == (6, 10)
        assert torch.allclose(soft.sum(dim=1), torch.ones(6))
        assert (soft.argmax(dim=1) == labels).all() or (soft.max(dim=1).values >= 0.5).all()
    with pytest.raises(ValueError, match="non-negative alpha"):
        mixup_cutmix(10, mixup=-1)
    with pytest.raises(ValueError, match="num_classes of at least 2"):
        mixup_cutmix(1, mixup=0.2)


def test_missing_torchvision_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.transforms", None)
    with pytest.raises(ImportError, match=r'pip install "mobilenets\[train\]"'):
        train_transform(LITE0_CFG)
    with pytest.raises(ImportError, match=r'pip install "mobilenets\[train\]"'):
        val_transform(LITE0_CFG)


def test_imagenet_wnids_align_with_class_names():
    ids, names = imagenet_wnids(), imagenet_categories()
    assert len(ids) == len(set(ids)) == 1000 and all(len(i) == 9 and i[0] == "n" and i[1:].isdigit() for i in ids)
    for wnid, name in (("n01440764", "tench"), ("n02123045", "tabby"), ("n02123159", "tiger cat"),
                       ("n07920052", "espresso"), ("n03063599", "coffee mug"), ("n15075141", "toilet tissue")):
        assert names[ids.index(wnid)] == name
