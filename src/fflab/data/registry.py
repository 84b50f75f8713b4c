"""Data sets by name: where their files come from, their checksums, shapes and class names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fflab.errors import DataError

Kind = Literal["download", "folder", "embedded", "derived"]
Role = Literal["images", "labels", "archive"]
Reader = Literal["idx", "cifar", "cifar100", "images"]


@dataclass(frozen=True)
class FileSpec:
    """One file of a data set.

    `name` is the published file name; `md5` is that of the published (gzip) file, checked after a
    download; `sha256` is that of the decompressed IDX payload, checked on every load so that
    re-compressed copies of the official data pass too. An "archive" (CIFAR-10's tar.gz) has only an md5.
    """

    name: str
    role: Role
    md5: str | None = None
    sha256: str | None = None
    shape: tuple[int, ...] | None = None
    aliases: tuple[str, ...] = ()

    @property
    def candidates(self) -> tuple[str, ...]:
        """File names accepted on disk, in order of preference: each name gzip-compressed, then raw."""
        stems = [n.removesuffix(".gz") for n in (self.name, *self.aliases)]
        return tuple(name for stem in stems for name in (f"{stem}.gz", stem))


@dataclass(frozen=True)
class DatasetSpec:
    """What `fflab data list` shows and what the loader needs to find and verify a data set.

    kind: "download" (official files fetched from `mirrors`), "folder" (a user's own folder given by
    `path`), "embedded" (shipped with a dependency, never downloaded) or "derived" (built from the set
    named `base`; loaded by `load_sequence_dataset`). `reader` says which reader loads its files: "idx"
    (`files` are ordered train images, train labels, test images, test labels), "cifar" (the official
    CIFAR-10 archive, or an image folder; see fflab.data.cifar), "cifar100" (the official CIFAR-100 archive; see
    fflab.data.cifar100) or "images" (an image folder).
    """

    name: str
    description: str
    kind: Kind
    files: tuple[FileSpec, ...] = ()
    mirrors: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    homepage: str = ""
    base: str = ""
    reader: Reader = "idx"


IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DIGIT_NAMES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The fine labels of CIFAR-100, as its meta file names them (label k is the k-th, alphabetical).
CIFAR100_CLASSES = tuple(
    """
    apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can
    castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
    elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard
    lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear
    pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal
    shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank
    telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm
    """.split()
)


def _idx_aliases(stem: str) -> tuple[str, ...]:
    """Other names users' IDX files commonly have: `test-` for `t10k-`, `images.idx3` for `images-idx3`."""
    names: list[str] = []
    for prefixed in (stem, stem.replace("t10k-", "test-")):
        for name in (prefixed, prefixed.replace("s-idx", "s.idx")):
            if name != stem and name not in names:
                names.append(name)
    return tuple(names)


def _mnist_like(
    name: str,
    description: str,
    homepage: str,
    mirrors: tuple[str, ...],
    md5s: tuple[str, str, str, str],
    sha256s: tuple[str | None, str | None, str | None, str | None],
    class_names: tuple[str, ...],
) -> DatasetSpec:
    """A data set published as the four standard 28x28 MNIST-format gzip files (60,000 / 10,000)."""
    shapes = ((60000, 28, 28), (60000,), (10000, 28, 28), (10000,))
    files = tuple(
        FileSpec(f"{stem}.gz", "images" if "images" in stem else "labels", md5, sha, shape)
        for stem, md5, sha, shape in zip(IDX_FILES, md5s, sha256s, shapes, strict=True)
    )
    return DatasetSpec(name, description, "download", files, mirrors, class_names, homepage)


_REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "digits",
            "scikit-learn's 8x8 handwritten digits, 1,797 images (1,437 train / 360 test, stratified, fixed "
            "seed); bundled, never downloaded",
            "embedded",
            class_names=DIGIT_NAMES,
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
        ),
        _mnist_like(
            "mnist",
            "MNIST handwritten digits, 28x28 grey, 60,000 train / 10,000 test",
            "http://yann.lecun.com/exdb/mnist/",
            (
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
            ),
            (
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
            (
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
            DIGIT_NAMES,
        ),
        _mnist_like(
            "fashion-mnist",
            "Zalando Fashion-MNIST clothing images, 28x28 grey, 60,000 train / 10,000 test",
            "https://github.com/zalandoresearch/fashion-mnist",
            ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
            (
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
            (
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ),
        ),
        _mnist_like(
            "kmnist",
            "Kuzushiji-MNIST cursive Japanese (10 hiragana), 28x28 grey, 60,000 train / 10,000 test",
            "https://github.com/rois-codh/kmnist",
            ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
            (
                "bdb82020997e1d708af4cf47b453dcf7",
                "e144d726b3acfaa3e44228e80efcd344",
                "5c965bf0a639b31b8f53240b1b52f4d7",
                "7320c461ea6c1c855c0b718fb2a4b134",
            ),
            (None, None, None, None),
            ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        ),
        DatasetSpec(
            "cifar10",
            "CIFAR-10 photos in 10 classes, 32x32 RGB, 50,000 train / 10,000 test; the official python archive "
            "(or its extracted folder), or an image folder or a tar of one",
            "download",
            files=(FileSpec("cifar-10-python.tar.gz", "archive", md5="c58f30108f718f92721af3b95e74349a"),),
            mirrors=("https://www.cs.toronto.edu/~kriz/",),
            class_names=CIFAR10_CLASSES,
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            reader="cifar",
        ),
        DatasetSpec(
            "cifar100",
            "CIFAR-100 photos in 100 classes (the fine labels), 32x32 RGB, 50,000 train / 10,000 test; the official "
            "python archive or its extracted folder",
            "download",
            files=(FileSpec("cifar-100-python.tar.gz", "archive", md5="eb9058c3a382ffc7106e4002c42a8d85"),),
            mirrors=("https://www.cs.toronto.edu/~kriz/",),
            class_names=CIFAR100_CLASSES,
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            reader="cifar100",
        ),
        DatasetSpec(
            "idx",
            "your own folder of MNIST-format IDX files (gzip or raw), given as path; test-* may replace "
            "t10k-*; classes = 0..max training label, each with training samples, or those named in classes.txt",
            "folder",
            files=tuple(
                FileSpec(stem, "images" if "images" in stem else "labels", aliases=_idx_aliases(stem))
                for stem in IDX_FILES
            ),
        ),
        DatasetSpec(
            "image-folder",
            "your own folder of images, given as path: train/<class>/*.png|jpg and test/<class>/...; classes = "
            "folder names (sorted); decoded once, then cached as tensors",
            "folder",
            reader="images",
        ),
        DatasetSpec(
            "seq-mnist",
            "MNIST as sequences: 28 rows of 28 pixels, or chunks of the flattened (optionally permuted) image; "
            "from mnist, via load_sequence_dataset",
            "derived",
            class_names=DIGIT_NAMES,
            base="mnist",
        ),
        DatasetSpec(
            "moving-mnist",
            "1 or 2 MNIST digits bouncing in a 64x64 canvas for 20 frames (Srivastava et al. 2015), seeded and "
            "cached; from mnist, via load_sequence_dataset",
            "derived",
            class_names=DIGIT_NAMES,
            homepage="https://www.cs.toronto.edu/~nitish/unsupervised_video/",
            base="mnist",
        ),
    )
}


def available_datasets() -> list[DatasetSpec]:
    """All registered data sets, in a stable order (for `fflab data list`)."""
    return list(_REGISTRY.values())


def get_spec(name: str) -> DatasetSpec:
    """Look a data set up by name (case-insensitive, `_` accepted for `-`)."""
    key = name.strip().lower().replace("_", "-")
    if key not in _REGISTRY:
        raise DataError(
            f"Unknown data set {name!r}. Available: {', '.join(_REGISTRY)} (see `fflab data list`). "
            "For your own MNIST-format files use the 'idx' data set with a path to their folder, for your own "
            "images the 'image-folder' data set."
        )
    return _REGISTRY[key]
