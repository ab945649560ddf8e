"""The patch classifier's starting weights from a local file (`mvmammo patches train --init FILE`).

Two kinds of file, both read as plain tensors (``weights_only=True``: nothing in the file is executed, and
nothing is downloaded):

* ours: a patch run folder (its best.pt, else last.pt) or one such checkpoint, ``{"model": state dict, "arch":
  DenseNetConfig dict, ...}`` as written by `mvmammo patches train` or `mvmammo weights import-nyu`. Its padding
  ("torch" or TensorFlow "same") comes with it.
* a torchvision-layout DenseNet state dict, e.g. torchvision's ImageNet ``densenet121-*.pth``: bare, or under
  "model" / "state_dict"; a "module." prefix (DataParallel) is dropped. The ImageNet files use torchvision's old
  key style inside dense layers, ``denselayerK.norm.1.weight`` for ``denselayerK.norm1.weight`` (likewise
  ``relu.1``, ``conv.1``, ``norm.2``, ``relu.2``, ``conv.2``); transitions keep ``norm`` / ``conv``. Padding "torch".

Mapping onto our 1-channel :class:`~mvmammo.models.densenet.DenseNet`:

* conv0 of a 3-channel file, (F, 3, 7, 7), is summed over its input channels into (F, 1, 7, 7): a grey patch
  replicated to 3 channels gives the same convolution, so the features are exactly the source model's.
* the classifier is loaded only when it has our 4 classes; otherwise (1000 ImageNet classes, say) it keeps the
  fresh initialisation of a model seeded with the run's seed, and the info says so.
* the architecture (growth, blocks, init_features, bn_size) is read from the tensor shapes; a field the user
  left at its default takes the file's value, an explicit different value is an error. The state is loaded
  with ``strict=True`` after the mapping, so a file that does not fit cannot half-load.

Every failure is one :class:`InitError` line naming the file.
"""
from __future__ import annotations

import hashlib
import pickle
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from mvmammo.errors import MvError
from mvmammo.models.densenet import DenseNet, DenseNetConfig
from mvmammo.training.checkpoint import CheckpointError, load, load_model_state

ARCH_FIELDS = ("growth", "blocks", "init_features", "bn_size")   # the fields the file's shapes decide
CONV0 = "features.conv0.weight"
CLASSIFIER = ("classifier.weight", "classifier.bias")

# torchvision's old dense-layer key style: "denselayer3.norm.1.weight" -> "denselayer3.norm1.weight".
_OLD_KEY = re.compile(r"(\.denselayer\d+\.)(norm|relu|conv)\.([12])\.")


class InitError(MvError, ValueError):
    """An --init file that cannot start the patch classifier (one line: the file and why)."""


@dataclass(frozen=True)
class InitFile:
    """One --init file, read and mapped to our key names (conv0 still as in the file)."""

    path: str            # what the user named (folder or file), absolute
    file: str            # the file actually read (a run folder's best.pt / last.pt), absolute
    sha256: str          # of ``file``'s bytes
    kind: str            # "checkpoint" (ours) or "state_dict" (torchvision layout)
    state: dict          # key -> tensor, our key names
    arch: DenseNetConfig # read from the shapes (in_channels = the file's conv0 input channels)
    renamed: int         # keys rewritten from torchvision's old dense-layer style


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch's run on for several lines of advice)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:200]


def _refusal(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused, without its advice to load the file unsafely."""
    lines = [ln.strip().rstrip(".") for ln in str(exc).splitlines()]
    return next((ln for ln in lines if "GLOBAL" in ln), None) or \
        next((ln for ln in lines if ln.startswith("Unsupported")), "it asks the unpickler to build objects")


def _load_file(path: Path):
    """The file's object, unpickled as tensors and plain containers only."""
    try:
        with warnings.catch_warnings():
            # torch warns on stderr about a foreign pickle before refusing it; the refusal below is the one line
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # Our own last.pt files written before the RNG states were plain data hold numpy arrays, which the
        # checkpoint loader (and only it) accepts; anything else that asks for objects is refused there too.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return load(path)
        except CheckpointError:
            raise InitError(f"{path}: not loadable as plain tensors (refused: {_refusal(exc)}; nothing in it was run);"
                            " give a patch run folder, one of its checkpoints, or a DenseNet state dict") from None
    except Exception as exc:   # torch raises several types for a damaged or foreign file
        raise InitError(f"{path}: not loadable as plain tensors ({type(exc).__name__}: {_first_line(exc)}); the "
                        "file is damaged or not a PyTorch weights file") from None


def _run_checkpoint(folder: Path) -> Path:
    for name in ("best.pt", "last.pt"):
        if (folder / name).exists():
            return folder / name
    raise InitError(f"{folder}: a folder without best.pt or last.pt; give a patch run folder "
                    "(mvmammo patches train / weights import-nyu) or a weights file")


def _our_names(state: dict) -> tuple[dict, int]:
    """Drop a DataParallel "module." prefix and rewrite torchvision's old dense-layer keys; (state, renamed)."""
    out, renamed = {}, 0
    for k, v in state.items():
        if k.startswith("module."):
            k = k[len("module."):]
        new = _OLD_KEY.sub(r"\1\2\3.", k)
        renamed += new != k
        out[new] = v
    return out, renamed


def _arch_of(state: dict, path: Path, padding: str) -> DenseNetConfig:
    """The DenseNetConfig that the tensor shapes describe (num_classes left at ours: the classifier is optional)."""
    blocks = []
    while True:
        prefix = f"features.denseblock{len(blocks) + 1}."
        layers = {k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)}
        if not layers:
            break
        blocks.append(len(layers))
    try:
        conv0 = state[CONV0]                                                  # (F, in, 7, 7)
        conv1 = state["features.denseblock1.denselayer1.conv1.weight"]        # (bn_size * growth, F, 1, 1)
        conv2 = state["features.denseblock1.denselayer1.conv2.weight"]        # (growth, bn_size * growth, 3, 3)
    except KeyError as exc:
        raise InitError(f"{path}: not a torchvision-layout DenseNet (no {exc.args[0]}); give a patch run folder or "
                        "a DenseNet state dict such as densenet121-*.pth") from None
    if conv0.dim() != 4 or conv1.dim() != 4 or conv2.dim() != 4:
        raise InitError(f"{path}: conv0 / denselayer1 weights are not 4-d convolution kernels; not a DenseNet")
    growth = int(conv2.shape[0])
    if growth < 1 or int(conv1.shape[0]) % growth:
        raise InitError(f"{path}: denselayer1's conv1 ({int(conv1.shape[0])} out) is not a multiple of its growth "
                        f"({growth}); not a DenseNet of torchvision's layout")
    return DenseNetConfig(growth=growth, blocks=tuple(blocks), init_features=int(conv0.shape[0]),
                          bn_size=int(conv1.shape[0]) // growth, in_channels=int(conv0.shape[1]), padding=padding)


def read_init(path: str | Path) -> InitFile:
    """Read an --init file or run folder (plain tensors only) and map its keys to ours."""
    named = Path(path)
    if not named.exists():
        raise InitError(f"{named}: file not found; give a patch run folder, one of its checkpoints, or a local "
                        "DenseNet state dict (nothing is downloaded)")
    file = _run_checkpoint(named) if named.is_dir() else named
    obj = _load_file(file)
    if isinstance(obj, dict) and "arch" in obj and isinstance(obj.get("model"), dict):
        kind, state = "checkpoint", obj["model"]
        padding = str(obj["arch"].get("padding", "torch")) if isinstance(obj["arch"], dict) else "torch"
    else:
        kind, padding = "state_dict", "torch"
        state = obj
        if isinstance(obj, dict):
            for key in ("model", "state_dict"):
                if isinstance(obj.get(key), dict):
                    state = obj[key]
                    break
    if not isinstance(state, dict) or not state or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise InitError(f"{file}: no state dict of tensors (expected a checkpoint of ours, a state dict, or one under "
                        "'model' / 'state_dict')")
    state, renamed = _our_names(state)
    if CONV0 not in state:
        raise InitError(f"{file}: not a DenseNet (no {CONV0}); give a patch run folder or a torchvision-layout "
                        "DenseNet state dict such as densenet121-*.pth")
    arch = _arch_of(state, file, padding)
    if arch.in_channels not in (1, 3):
        raise InitError(f"{file}: conv0 reads {arch.in_channels} input channels; only 1 (ours) or 3 (a grey patch "
                        "replicated, as in ImageNet and NYU models) fold into our 1-channel conv0")
    return InitFile(path=str(named.resolve()), file=str(file.resolve()), sha256=_sha256(file), kind=kind,
                    state=state, arch=arch, renamed=renamed)


def _arch_text(a: DenseNetConfig) -> str:
    return (f"growth {a.growth}, blocks {'-'.join(str(b) for b in a.blocks)}, init_features {a.init_features}, "
            f"bn_size {a.bn_size}")


def resolve_arch(requested: DenseNetConfig, init: InitFile) -> DenseNetConfig:
    """The run's architecture: each of growth/blocks/init_features/bn_size left at its default takes the file's;
    an explicit value that differs from the file's is an error. Padding: the file's unless the run set one."""
    default = DenseNetConfig()
    clash = [f for f in ARCH_FIELDS if getattr(requested, f) != getattr(default, f)
             and getattr(requested, f) != getattr(init.arch, f)]
    if clash:
        asked = ", ".join(f"{f} {'-'.join(map(str, v)) if f == 'blocks' else v}"
                          for f in clash for v in [getattr(requested, f)])
        raise InitError(f"{init.path}: the file holds a DenseNet with {_arch_text(init.arch)}, the run asks for "
                        f"{asked}; leave --growth/--blocks/--init-features at their defaults to take the file's, "
                        "or give the file's")
    padding = init.arch.padding if requested.padding == default.padding else requested.padding
    return replace(requested, padding=padding, **{f: getattr(init.arch, f) for f in ARCH_FIELDS})


def initial_state(source: str | Path | InitFile, arch: DenseNetConfig, seed: int) -> tuple[dict, dict]:
    """(state dict for ``DenseNet(arch)``, info) from an --init file.

    ``arch`` is the run's (see :func:`resolve_arch`). The classifier, when not taken from the file, is that of a
    DenseNet(arch) built right after ``torch.manual_seed(seed)`` - the same one a fresh run starts with; the
    global RNG state is left as it was.
    """
    init = source if isinstance(source, InitFile) else read_init(source)
    state = dict(init.state)
    if init.arch.in_channels == 3 and arch.in_channels == 1:
        state[CONV0] = state[CONV0].sum(dim=1, keepdim=True)   # (F, 3, 7, 7) -> (F, 1, 7, 7), exact on grey input
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DenseNet(arch)
    target = model.state_dict()
    file_classes = int(state[CLASSIFIER[0]].shape[0]) if CLASSIFIER[0] in state else None
    if file_classes != arch.num_classes:
        for k in CLASSIFIER:
            state.pop(k, None)
            state[k] = target[k]           # the seeded fresh classifier
    tensors = sum(1 for k in state if k in init.state and k not in CLASSIFIER) + \
        (2 if file_classes == arch.num_classes else 0)
    for k, t in target.items():            # files saved before BatchNorm counted its batches lack these counters
        if k.endswith("num_batches_tracked"):
            state.setdefault(k, t)
    unexpected = [k for k in state if k not in target]
    missing = [k for k in target if k not in state]
    wrong = [k for k in state if k in target and tuple(state[k].shape) != tuple(target[k].shape)]
    if unexpected or missing or wrong:
        k = (wrong or missing or unexpected)[0]
        what = (f"shape {tuple(state[k].shape)}, the model needs {tuple(target[k].shape)}" if wrong else
                "missing in the file" if missing else "not in the model")
        raise InitError(f"{init.file}: tensors do not fit a DenseNet with {_arch_text(arch)} (first: {k}, {what}; "
                        f"{len(wrong)} wrong shape, {len(missing)} missing, {len(unexpected)} extra)")
    load_model_state(model, state, path=init.file)   # strict; the checks above name what does not fit
    info = {"path": init.path, "file": init.file, "sha256": init.sha256, "kind": init.kind, "tensors": tensors,
            "classifier": "loaded" if file_classes == arch.num_classes else "fresh", "file_classes": file_classes,
            "conv0_folded": init.arch.in_channels == 3, "renamed": init.renamed, "arch": arch.to_dict()}
    return model.state_dict(), info


def describe(info: dict, shown: str | None = None) -> str:
    """The one line `patches train` prints about what the init file gave."""
    name = shown or info["path"]
    if info["classifier"] == "loaded":
        head = f"classifier loaded ({info['file_classes']} classes)"
    elif info["file_classes"] is None:
        head = "classifier fresh (none in the file)"
    else:
        head = f"classifier fresh ({info['file_classes']} classes in the file)"
    folded = "; conv0 folded from 3 channels to 1" if info["conv0_folded"] else ""
    renamed = f"; {info['renamed']} old-style torchvision keys renamed" if info["renamed"] else ""
    arch = DenseNetConfig.from_dict(info["arch"])
    return (f"initialised from {name}: {info['tensors']} tensors; {head}{folded}{renamed} "
            f"(DenseNet {_arch_text(arch)}, padding {arch.padding})")
