"""The memories honour scikit-learn's estimator contract (checked directly: scikit-learn is not a dependency).

What ``sklearn.base.clone``, grid searches and pipelines rely on:
``__init__`` stores every argument unchanged under its own name;
``get_params(deep=True)`` returns exactly those arguments; ``set_params``
changes them and returns the estimator; a clone built from the parameters
is unfitted and equal in parameters; a fitted classifier has ``classes_``
naming ``predict_proba``'s columns, and an unfitted one does not.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from clifer_core.memory.gdm import GrowingDualMemory
from clifer_core.memory.gwr import EpisodicGammaGWR, NotFittedError

ESTIMATORS = (EpisodicGammaGWR, GrowingDualMemory)


def clone(estimator):
    """``sklearn.base.clone`` for estimators without nested estimators: a new, unfitted one with the same parameters."""
    params = estimator.get_params(deep=False)
    twin = type(estimator)(**params)
    for name, value in params.items():
        assert twin.get_params(deep=False)[name] is value, f"__init__ modifies or drops {name}"
    return twin


def non_default_arguments(cls) -> dict:
    """A distinct value for every ``__init__`` argument, so a swapped or dropped one shows."""
    changed = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        default = parameter.default
        if name == "self":
            continue
        if isinstance(default, bool):
            changed[name] = not default
        elif isinstance(default, (int, float)):
            changed[name] = default + 1 if name != "n_classes" else 4
        else:
            changed[name] = default
    return changed


def taught(cls) -> object:
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(centre, 0.1, (10, 5)) for centre in (0.0, 2.0, 4.0)]).astype(np.float32)
    y = np.repeat([0, 1, 2], 10)
    return cls(n_classes=4).partial_fit(X, y), X


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_get_params_returns_exactly_the_constructor_arguments(cls):
    arguments = non_default_arguments(cls)
    estimator = cls(**arguments)
    assert estimator.get_params(deep=True) == arguments
    assert estimator.get_params(deep=True) == estimator.get_params(deep=False), "no nested estimators"
    for name, value in arguments.items():
        assert estimator.get_params()[name] is value, f"{name} is stored unchanged"


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_set_params_changes_them_returns_the_estimator_and_refuses_unknown_names(cls):
    estimator = cls()
    assert estimator.set_params(epochs=3, beta=0.5) is estimator
    assert (estimator.get_params()["epochs"], estimator.get_params()["beta"]) == (3, 0.5)
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        estimator.set_params(learning_rate=0.1)


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_a_clone_of_a_fitted_memory_is_unfitted_with_equal_parameters(cls):
    fitted, X = taught(cls)
    twin = clone(fitted)
    assert twin.get_params() == fitted.get_params()
    assert not twin.is_fitted and fitted.is_fitted
    with pytest.raises(NotFittedError):
        twin.predict(X)


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_classes_name_the_probability_columns_once_fitted(cls):
    assert not hasattr(cls(n_classes=4), "classes_"), "unfitted: no fitted attribute"
    fitted, X = taught(cls)
    assert fitted.classes_.tolist() == [0, 1, 2, 3]
    probabilities = fitted.predict_proba(X)
    assert probabilities.shape == (len(X), len(fitted.classes_))
    predicted = fitted.predict(X)
    assert set(predicted.tolist()) <= set(fitted.classes_.tolist())
    assert np.array_equal(fitted.classes_[probabilities.argmax(axis=1)], predicted)
