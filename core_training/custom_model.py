"""Your own model: a factory named ``"package.module:factory"`` in the app folder.

The run config's ``model`` may name a factory instead of a built-in kind. The factory is
called as ``factory(inputs, **model_args)``, where ``inputs`` is a :class:`ModelInputs`
(what the data implies: feature count, class count, image shape, the one-hot blocks of
categorical features) and ``model_args`` are the run config's ``model-args`` (a JSON
object). It returns an ``nn.Module`` mapping a (batch, in_features) float tensor to
(batch, num_classes) logits; one forward pass on a zero batch checks that before any
training.

Trust: the server and every silo import the code a model reference names, so a reference
is only ever looked up inside the app folder (:func:`app_dir`): in a Flower run the app
bundle every party already runs, never an installed module such as ``os``. Nothing is
imported from anywhere else, and the modules on the way (its packages) are loaded from
that folder too. A model file records the reference and the arguments, so loading one
imports that factory from the app folder and calls it, and runs nothing else.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

# a factory's own code imports ModelInputs (and CategoricalBlock) from here
from .model_spec import CategoricalBlock, ModelInputs, is_reference

__all__ = [
    "APP_DIR_ENV",
    "CategoricalBlock",
    "ModelFactoryError",
    "ModelInputs",
    "app_dir",
    "build_custom",
    "check_output",
    "load_factory",
]

APP_DIR_ENV = "FEDSILO_APP_DIR"


class ModelFactoryError(ValueError):
    """A model reference cannot be imported, its factory fails, or its model does not fit
    the data; the message is one line that names the reference."""


def app_dir() -> Path:
    """The folder model references are looked up in: ``$FEDSILO_APP_DIR`` when the
    process's operator sets it, else the folder that holds the fedsilo packages being
    run (in a Flower run, the app bundle: Flower loads the app from it)."""
    chosen = os.environ.get(APP_DIR_ENV)
    return Path(chosen).resolve() if chosen else Path(__file__).resolve().parents[1]


def load_factory(reference: str, root: Path | None = None) -> Any:
    """The callable ``reference`` names, imported from ``root`` (default :func:`app_dir`)."""
    if not is_reference(reference):
        raise ModelFactoryError(
            f"model {reference!r} is not a plain 'package.module:factory' reference"
        )
    module_name, attr = reference.split(":")
    root = (root or app_dir()).resolve()
    try:
        module = _import_inside(module_name, root)
    except ModelFactoryError as exc:
        raise ModelFactoryError(f"model {reference!r}: {exc}") from None
    except Exception as exc:  # the module itself failed while importing
        raise ModelFactoryError(
            f"model {reference!r}: importing {module_name} failed: {_one_line(exc)}"
        ) from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelFactoryError(f"model {reference!r}: {module_name} has no callable {attr!r}")
    return factory


def build_custom(
    reference: str, inputs: ModelInputs, args: dict[str, Any], root: Path | None = None
) -> nn.Module:
    """Call the factory and check its model with one forward pass on a zero batch."""
    factory = load_factory(reference, root)
    try:
        model = factory(inputs, **args)
    except Exception as exc:
        raise ModelFactoryError(
            f"model {reference!r}: the factory raised {_one_line(exc)}"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ModelFactoryError(
            f"model {reference!r}: the factory returned a {type(model).__name__}, not an nn.Module"
        )
    check_output(model, inputs, reference)
    return model


def check_output(model: nn.Module, inputs: ModelInputs, reference: str) -> None:
    """One forward pass on two zero rows must give (2, num_classes) finite logits."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, inputs.in_features))
    except Exception as exc:
        raise ModelFactoryError(
            f"model {reference!r}: a forward pass on a (2, {inputs.in_features}) zero batch "
            f"failed: {_one_line(exc)}"
        ) from exc
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, inputs.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelFactoryError(
            f"model {reference!r}: output {shape} for a batch of 2, expected "
            f"(2, {inputs.num_classes}) logits (one per class)"
        )


def _import_inside(name: str, root: Path) -> ModuleType:
    """Import ``name`` and its packages from files under ``root`` only. Each step is
    found without executing anything; a module already imported from elsewhere, or a
    file outside ``root`` (a symbolic link out of it, say), is refused."""
    parts = name.split(".")
    search: list[str] | None = [str(root)]
    module: ModuleType | None = None
    for i in range(len(parts)):
        full = ".".join(parts[: i + 1])
        if search is None:
            raise ModelFactoryError(f"{parts[i - 1]} is not a package")
        spec = importlib.machinery.PathFinder.find_spec(full, search)
        if spec is None:
            raise ModelFactoryError(f"no {full} in the app folder {root}")
        places = [spec.origin] if spec.has_location and spec.origin else []
        places += list(spec.submodule_search_locations or [])
        outside = [p for p in places if not Path(p).resolve().is_relative_to(root)]
        if outside or not places:
            raise ModelFactoryError(f"{full} lies outside the app folder")
        loaded = sys.modules.get(full)
        if loaded is not None:
            if _places(loaded) != {str(Path(p).resolve()) for p in places}:
                raise ModelFactoryError(
                    f"{full} is already imported from outside the app folder {root}; "
                    "rename the package"
                )
            module = loaded
        else:
            module = importlib.util.module_from_spec(spec)
            sys.modules[full] = module
            try:
                assert spec.loader is not None
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(full, None)
                raise
            if i:
                setattr(sys.modules[".".join(parts[:i])], parts[i], module)
        search = list(spec.submodule_search_locations or []) or None
    assert module is not None
    return module


def _places(module: ModuleType) -> set[str]:
    found = {str(Path(module.__file__).resolve())} if getattr(module, "__file__", None) else set()
    return found | {str(Path(p).resolve()) for p in getattr(module, "__path__", [])}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
