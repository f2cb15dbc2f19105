"""The paper's MLP baseline condition, in numpy so protocol workers need no TensorFlow.

docs/design.md §5.4: input -> 64 -> 32 -> 16 (ReLU) -> softmax over the classes,
Adam (lr 0.002, beta1 0.5), 20 epochs per increment on the new class only,
batch 64, cross-entropy, the same network re-used across increments. The
original's batch normalisation after the hidden layers is left out: with one
class per increment its batch statistics carry no information, and the
condition exists to show catastrophic forgetting, which it does either way.
"""

from __future__ import annotations

import numpy as np

HIDDEN = (64, 32, 16)


class IncrementalMLP:
    """``partial_fit(X, y)`` trains on one increment; ``predict(X)`` returns class indices."""

    def __init__(self, n_features: int, n_classes: int, seed: int = 0, epochs: int = 20, batch_size: int = 64,
                 learning_rate: float = 0.002, beta1: float = 0.5, beta2: float = 0.999):
        rng = np.random.default_rng(seed)
        sizes = (n_features, *HIDDEN, n_classes)
        self.weights = [rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_in, fan_out))
                        for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
        self.biases = [np.zeros(fan_out) for fan_out in sizes[1:]]
        self.epochs, self.batch_size, self.learning_rate = epochs, batch_size, learning_rate
        self.beta1, self.beta2 = beta1, beta2
        self.rng = rng
        parameters = self.weights + self.biases
        self._first = [np.zeros_like(p) for p in parameters]
        self._second = [np.zeros_like(p) for p in parameters]
        self._steps = 0

    def _forward(self, X: np.ndarray) -> list[np.ndarray]:
        activations = [X]
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            z = activations[-1] @ weight + bias
            if layer < len(self.weights) - 1:
                activations.append(np.maximum(z, 0.0))
            else:
                z = z - z.max(axis=1, keepdims=True)
                exp = np.exp(z)
                activations.append(exp / exp.sum(axis=1, keepdims=True))
        return activations

    def _adam_step(self, gradients: list[np.ndarray]) -> None:
        self._steps += 1
        parameters = self.weights + self.biases
        for i, (parameter, gradient) in enumerate(zip(parameters, gradients)):
            self._first[i] = self.beta1 * self._first[i] + (1 - self.beta1) * gradient
            self._second[i] = self.beta2 * self._second[i] + (1 - self.beta2) * gradient ** 2
            first = self._first[i] / (1 - self.beta1 ** self._steps)
            second = self._second[i] / (1 - self.beta2 ** self._steps)
            parameter -= self.learning_rate * first / (np.sqrt(second) + 1e-7)

    def partial_fit(self, X, y) -> "IncrementalMLP":
        X = np.asarray(X, np.float64)
        y = np.asarray(y, np.int64)
        for _ in range(self.epochs):
            shuffled = self.rng.permutation(len(X))
            for start in range(0, len(X), self.batch_size):
                batch = shuffled[start:start + self.batch_size]
                activations = self._forward(X[batch])
                delta = activations[-1].copy()
                delta[np.arange(len(batch)), y[batch]] -= 1.0
                delta /= len(batch)
                weight_gradients, bias_gradients = [], []
                for layer in range(len(self.weights) - 1, -1, -1):
                    weight_gradients.insert(0, activations[layer].T @ delta)
                    bias_gradients.insert(0, delta.sum(axis=0))
                    if layer:
                        delta = (delta @ self.weights[layer].T) * (activations[layer] > 0)
                self._adam_step(weight_gradients + bias_gradients)
        return self

    def predict_proba(self, X) -> np.ndarray:
        return self._forward(np.asarray(X, np.float64))[-1]

    def predict(self, X) -> np.ndarray:
        return np.argmax(self.predict_proba(X), axis=1)
