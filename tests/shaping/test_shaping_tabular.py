"""A two-state MDP solved exactly: a "noisy TV" intrinsic reward changes the optimal policy when
added raw, while ADOPS's shaped reward keeps the extrinsically optimal action set (Thm 5.2).

States: 0 = start, 1 = TV. Actions: 0 = "leave" (from start: reach the exit, r_E = 1, episode
ends; from TV: walk back to start), 1 = "watch" (go to / stay at the TV, intrinsic F = 1, r_E = 0).
γ = 0.9. Extrinsically: leave at start (Q_E = 1 vs 0.81) and leave the TV (0.9 vs 0.81). With raw
F the TV pays 1/(1 − 0.9) = 10 forever, so "watch" wins everywhere.
"""

import itertools

import numpy as np
import pytest
import torch

from rlhfv.shaping.methods import adops_f2

GAMMA = 0.9
NEXT = np.array([[-1, 1], [0, 1]])  # next state per (s, a); −1 = episode ends
R_EXT = np.array([[1.0, 0.0], [0.0, 0.0]])
F_INT = np.array([[0.0, 1.0], [0.0, 1.0]])
EXT_OPTIMAL = [{0}, {0}]  # optimal action set per state


def evaluate(policy: np.ndarray, reward: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact V^π and Q^π for a [S, A] reward by solving (I − γ P_π) V = r_π."""
    S, A = reward.shape
    P = np.zeros((S, A, S))
    for s, a in itertools.product(range(S), range(A)):
        if NEXT[s, a] >= 0:
            P[s, a, NEXT[s, a]] = 1.0
    P_pi = np.einsum("sa,sat->st", policy, P)
    v = np.linalg.solve(np.eye(S) - GAMMA * P_pi, (policy * reward).sum(1))
    return v, reward + GAMMA * P @ v


def optimal_sets(reward: np.ndarray) -> list[set[int]]:
    """Optimal action sets of the MDP with this [S, A] reward, by value iteration."""
    v = np.zeros(reward.shape[0])
    for _ in range(2000):
        q = reward + GAMMA * np.where(NEXT >= 0, v[np.maximum(NEXT, 0)], 0.0)
        v = q.max(1)
    return [set(np.flatnonzero(np.isclose(row, row.max(), rtol=0.0, atol=1e-9))) for row in q]


def adops_reward(policy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F' = F + F2 for this policy, with V_I the fixed point of evaluating F' itself (the intrinsic
    critic that the algorithm's critics converge to). Returns (F', V_I)."""
    v_ext, q_ext = evaluate(policy, R_EXT)
    v_int = np.zeros(2)
    for _ in range(500):
        v_int_next = np.where(NEXT >= 0, v_int[np.maximum(NEXT, 0)], 0.0)
        f2 = adops_f2(
            torch.tensor(v_ext[:, None].repeat(2, 1)),
            torch.tensor(q_ext),
            torch.tensor(v_int[:, None].repeat(2, 1)),
            torch.tensor(v_int_next),
            torch.tensor(F_INT),
            gamma=GAMMA,
            epsilon=1e-6,
        ).numpy()
        shaped = F_INT + f2
        new_v_int, _ = evaluate(policy, shaped)
        if np.abs(new_v_int - v_int).max() < 1e-12:
            break
        v_int = new_v_int
    assert np.abs(new_v_int - v_int).max() < 1e-9, "the intrinsic value did not reach a fixed point"
    return shaped, v_int


def policies() -> list[np.ndarray]:
    """All four deterministic policies plus stochastic ones."""
    out = [np.eye(2)[list(choice)] for choice in itertools.product(range(2), repeat=2)]
    out += [np.full((2, 2), 0.5), np.array([[0.2, 0.8], [0.7, 0.3]]), np.array([[0.9, 0.1], [0.05, 0.95]])]
    return out


def test_raw_intrinsic_reward_makes_watching_the_tv_optimal():
    assert optimal_sets(R_EXT) == EXT_OPTIMAL
    assert optimal_sets(R_EXT + F_INT) == [{1}, {1}]


@pytest.mark.parametrize("policy", policies(), ids=lambda p: str(p.round(2).tolist()))
def test_adops_keeps_the_sign_of_every_extrinsic_advantage_for_any_policy(policy):
    v_ext, q_ext = evaluate(policy, R_EXT)
    shaped, v_int = adops_reward(policy)
    _, q_int = evaluate(policy, shaped)
    adv_ext = q_ext - v_ext[:, None]  # [S, A]
    adv_both = q_ext + q_int - (v_ext + v_int)[:, None]
    better, worse = adv_ext >= 0, adv_ext < 0
    assert (adv_both[better] >= -1e-9).all() and (adv_both[worse] < 0).all()
    for s in range(2):  # with two actions this fixes the greedy choice (Thm 5.2)
        if not np.isclose(adv_ext[s, 0], adv_ext[s, 1]):
            assert np.argmax(q_ext[s] + q_int[s]) == np.argmax(q_ext[s])


def test_raw_intrinsic_flips_the_greedy_choice_where_adops_does_not():
    policy = np.eye(2)[[0, 0]]  # the extrinsically optimal policy
    _, q_ext = evaluate(policy, R_EXT)
    _, q_raw = evaluate(policy, R_EXT + F_INT)
    assert q_raw[0].argmax() == 1 and q_ext[0].argmax() == 0


def test_solving_the_adops_shaped_mdp_gives_the_extrinsically_optimal_actions():
    policy = np.eye(2)[[0, 0]]
    shaped, _ = adops_reward(policy)
    assert not np.allclose(shaped, F_INT)  # ADOPS had to change the TV reward
    assert optimal_sets(R_EXT + shaped) == EXT_OPTIMAL


def test_policy_iteration_with_adops_reaches_the_extrinsic_optimum_and_raw_reaches_the_tv():
    def iterate(shape: bool) -> list[set[int]]:
        policy = np.full((2, 2), 0.5)
        for _ in range(20):
            reward = R_EXT + (adops_reward(policy)[0] if shape else F_INT)
            _, q = evaluate(policy, reward)
            policy = np.eye(2)[q.argmax(1)]
        return [{int(a)} for a in policy.argmax(1)]

    assert iterate(shape=True) == EXT_OPTIMAL
    assert iterate(shape=False) == [{1}, {1}]
