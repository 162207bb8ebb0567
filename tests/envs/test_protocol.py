"""The evaluation protocol's own metrics: maze move accuracy's probes, chess outcomes
read from the boards of stored episodes."""

from __future__ import annotations

import chess
import pytest

from lmrl_ray.envs.base import AGENT, ENV
from lmrl_ray.envs.chess_game import spaced
from lmrl_ray.envs.maze import GOAL, STARTS
from lmrl_ray.envs.protocol import chess_outcome, episode_metrics, move_probes


def test_move_probes_cover_every_start_with_its_shortest_path_moves():
    probes = move_probes("maze")
    assert len(probes) == len(STARTS) == 25
    prompts = {prompt.strip(): best for prompt, _, best in probes}
    # By hand: (1, 1) leads right; (8, 6)'s neighbour above it, (7, 6), leads down; the
    # centre's (5, 6) has one way down to the goal.
    assert prompts["The goal is at position 8, 6. Your current position is at position 1, 1. "
                   "There are walls to your left, above you, below you."] == {"move right"}
    assert prompts["The goal is at position 8, 6. Your current position is at position 7, 6. "
                   "There are walls to your right, to your left."] == {"move down"}
    assert all(moves == ["move up", "move down", "move left", "move right"] for _, moves, _ in probes)
    assert all(best for _, _, best in probes) and GOAL not in STARTS
    # Partially observed: the same cells, seen through the walls sentence alone.
    po = move_probes("maze-po")
    assert [best for _, _, best in po] == [best for _, _, best in probes]
    assert all("position" not in prompt for prompt, _, _ in po)
    with pytest.raises(ValueError, match="move accuracy is a metric of maze, maze-po"):
        move_probes("wordle")


def game_row(moves: list[str], illegal_after: tuple[int, ...] = ()) -> dict:
    """A stored chess episode of White and Black `moves` (UCI) in pairs; an illegal agent
    turn (the board left as it was) after each move index in `illegal_after`."""
    board, turns = chess.Board(), []
    turns.append({"role": ENV, "text": spaced(board.fen())})
    for k in range(0, len(moves), 2):
        if k in illegal_after:
            turns += [{"role": AGENT, "text": "K x x 9"}, {"role": ENV, "text": spaced(board.fen())}]
        turns.append({"role": AGENT, "text": moves[k]})
        board.push_uci(moves[k])
        if k + 1 < len(moves):
            board.push_uci(moves[k + 1])
        turns.append({"role": ENV, "text": spaced(board.fen())})
    return {"turns": turns}


def test_chess_outcomes_are_read_from_the_boards():
    scholars = ["e2e4", "e7e5", "f1c4", "b8c6", "d1h5", "g8f6", "h5f7"]  # White mates on move 4
    fools = ["f2f3", "e7e5", "g2g4", "d8h4"]  # Black mates
    assert chess_outcome(game_row(scholars)) == ("win", 4, 0)
    assert chess_outcome(game_row(fools, illegal_after=(2,))) == ("loss", 3, 1)
    assert chess_outcome(game_row(["e2e4", "e7e5"])) == ("unfinished", 1, 0)
    stalemate = "7k/5Q2/6K1/8/8/8/8/8 b - - 0 1"  # Black to move, no legal move, not in check
    row = {"turns": [{"role": ENV, "text": spaced("7k/8/6K1/8/8/8/5Q2/8 w - - 0 1")},
                     {"role": AGENT, "text": "Q f 7"}, {"role": ENV, "text": spaced(stalemate)}]}
    assert chess_outcome(row) == ("draw", 1, 0)
    # Fivefold repetition completed by the opponent's reply (a stored board repeats) and
    # by the agent's own move (the repeated position, Black to move, is never stored).
    opening, shuffle = ["e2e4", "e7e5", "g1f3", "b8c6", "f1c4"], ["c6b8", "c4b5", "b8c6", "b5c4"]
    assert chess_outcome(game_row(opening + shuffle * 4)) == ("draw", 11, 0)
    assert chess_outcome(game_row(opening + shuffle * 3)) == ("unfinished", 9, 0)
    assert chess_outcome(game_row(["g1f3", "b8c6", "f3g1", "c6b8"] * 4)) == ("draw", 8, 0)
    metrics = episode_metrics("chess", [game_row(scholars), game_row(fools, illegal_after=(2,)), row])
    assert metrics == pytest.approx({"win_rate": 1 / 3, "draw_rate": 1 / 3, "loss_rate": 1 / 3,
                                     "illegal_move_rate": 1 / 8, "mean_game_turns": 8 / 3})
    assert episode_metrics("wordle", [row]) == {}
