"""A small numpy cart-pole: the classic Barto, Sutton & Anderson (1983) dynamics with the constants,
Euler integration and termination of Gymnasium's CartPole-v1, written here so the examples need
nothing but numpy.

State: [x, x_dot, theta, theta_dot]. Action 0 pushes the cart left, 1 right (10 N for 0.02 s).
An episode ends when |x| > 2.4 m or |theta| > 12 degrees; CartPole-v1 counts 500 steps as solved.
"""

from __future__ import annotations

import math

import numpy as np

GRAVITY = 9.8
MASS_CART = 1.0
MASS_POLE = 0.1
TOTAL_MASS = MASS_CART + MASS_POLE
LENGTH = 0.5  # half the pole's length
POLE_MASS_LENGTH = MASS_POLE * LENGTH
FORCE_MAG = 10.0
TAU = 0.02
X_LIMIT = 2.4
THETA_LIMIT = 12 * 2 * math.pi / 360
MAX_STEPS = 500


class CartPole:
    """CartPole-v1 without Gymnasium: reset(seed) -> obs, step(action) -> (obs, done)."""

    def __init__(self) -> None:
        self.state = np.zeros(4, np.float64)

    def reset(self, seed: int | None = None) -> np.ndarray:
        rng = np.random.default_rng(seed)
        self.state = rng.uniform(-0.05, 0.05, 4)
        return self.state.astype(np.float32)

    def step(self, action: int) -> tuple[np.ndarray, bool]:
        x, x_dot, theta, theta_dot = self.state
        force = FORCE_MAG if int(action) == 1 else -FORCE_MAG
        cos, sin = math.cos(theta), math.sin(theta)
        temp = (force + POLE_MASS_LENGTH * theta_dot**2 * sin) / TOTAL_MASS
        theta_acc = (GRAVITY * sin - cos * temp) / (LENGTH * (4.0 / 3.0 - MASS_POLE * cos**2 / TOTAL_MASS))
        x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS
        x += TAU * x_dot
        x_dot += TAU * x_acc
        theta += TAU * theta_dot
        theta_dot += TAU * theta_acc
        self.state = np.array([x, x_dot, theta, theta_dot])
        done = abs(x) > X_LIMIT or abs(theta) > THETA_LIMIT
        return self.state.astype(np.float32), done


def run_episode(act, seed: int = 0, max_steps: int = MAX_STEPS) -> int:
    """Runs one episode with act(obs) -> action and returns the steps the pole stayed up."""
    env = CartPole()
    obs = env.reset(seed)
    for t in range(max_steps):
        obs, done = env.step(int(act(obs)))
        if done:
            return t + 1
    return max_steps
