"""Chess and chess endgames: formats, rewards, the seeded opponent, positions, the engine."""

from __future__ import annotations

import time
from pathlib import Path

import chess
import numpy as np
import pytest

from lmrl_ray import envs
from lmrl_ray.envs import endgames
from lmrl_ray.envs.chess_game import (
    ChessBehaviourPolicy,
    ChessEnv,
    StockfishPolicy,
    find_stockfish,
    parse_move,
    softmax_choice,
    spaced,
    temperature_for_elo,
    unspaced,
)
from lmrl_ray.envs.endgames import (
    EndgameBehaviourPolicy,
    EndgamesEnv,
    eval_positions,
    material_kind,
)
from lmrl_ray.envs.play import play_episode

START_OBSERVATION = (
    "r n b q k b n r / p p p p p p p p / 8 / 8 / 8 / 8 / P P P P P P P P / R N B Q K B N R   w   K Q k q   -   0   1"
)
BACK_RANK_MATE_IN_ONE = "6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1"  # Ra8#
AFTER_F3_E5 = "rnbqkbnr/pppp1ppp/8/4p3/8/5P2/PPPPP1PP/RNBQKBNR w KQkq - 0 2"  # g4?? allows Qh4#
STALEMATE_IN_ONE = "k7/8/8/8/8/8/8/1Q5K w - - 0 1"  # Qb6 leaves Black no move
PROMOTION_WITH_CHECK = "8/4P3/8/7k/8/8/8/K7 w - - 0 1"  # e8=Q+ along the e8-h5 diagonal
KQ_VS_K = "8/8/8/3k4/8/8/8/KQ6 w - - 0 1"


@pytest.fixture(scope="module")
def chess_env():
    env = ChessEnv()
    yield env
    env.close()


@pytest.fixture(scope="module")
def endgames_env():
    env = EndgamesEnv()
    yield env
    env.close()


# -- Formats ------------------------------------------------------------------------


def test_spaced_fen_and_san_formats(chess_env):
    obs, info = chess_env.reset(seed=0)
    assert obs == START_OBSERVATION
    assert unspaced(obs) == chess.STARTING_FEN == info["fen"]
    assert spaced("Nf3") == "N f 3"
    board = chess.Board(PROMOTION_WITH_CHECK)
    assert spaced(board.san(chess.Move.from_uci("e7e8q"))) == "e 8 = Q +"
    board = chess.Board("rnbqkbnr/ppp1pppp/8/3p4/4P3/8/PPPP1PPP/RNBQKBNR w KQkq - 0 2")
    assert spaced(board.san(chess.Move.from_uci("e4d5"))) == "e x d 5"


@pytest.mark.parametrize(
    "text, san",
    [
        ("N f 3", "Nf3"),
        ("Nf3", "Nf3"),
        ("  N  f 3 ", "Nf3"),
        ("N f 3 +", "Nf3"),  # marks are optional and not checked
        ("N g 1 f 3", "Nf3"),  # full origin
        ("e 2 e 4", "e4"),
    ],
)
def test_lenient_readings_of_unambiguous_moves(text, san):
    board = chess.Board()
    move = parse_move(board, text)
    assert move is not None and board.san(move) == san


@pytest.mark.parametrize("text", ["", "n f 3", "E 4", "e 5", "- -", "0 0 0 0", "N f 6", "hello", "e" * 5000])
def test_unreadable_or_illegal_moves_parse_to_none(text):
    assert parse_move(chess.Board(), text) is None


def test_castling_and_promotion_readings():
    board = chess.Board("r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1")
    assert board.san(parse_move(board, "O - O")) == "O-O" == board.san(parse_move(board, "0-0"))
    assert board.san(parse_move(board, "O - O - O")) == "O-O-O"
    board = chess.Board(PROMOTION_WITH_CHECK)
    assert parse_move(board, "e 8 = Q +") == parse_move(board, "e8=Q") == chess.Move.from_uci("e7e8q")
    assert parse_move(board, "e 8 = N") == chess.Move.from_uci("e7e8n")


@pytest.mark.parametrize("fen", [chess.STARTING_FEN, PROMOTION_WITH_CHECK, "r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1"])
def test_legal_actions_are_the_spaced_san_of_the_legal_moves(chess_env, fen):
    chess_env.reset(seed=0, options={"fen": fen})
    board = chess.Board(fen)
    assert chess_env.legal_actions() == [spaced(board.san(m)) for m in board.legal_moves]
    assert all(parse_move(board, a) is not None for a in chess_env.legal_actions())


# -- Rewards and transitions --------------------------------------------------------


@pytest.mark.parametrize("action", ["N f 6", "K e 2", "e 5", "x y z", "", "- -"])
def test_invalid_move_costs_one_and_leaves_the_board(chess_env, action):
    obs, _ = chess_env.reset(seed=0)
    obs2, reward, terminated, truncated, info = chess_env.step(action)
    assert reward == -1.0 and not terminated and not truncated and info["invalid_action"]
    assert obs2 == obs and chess_env.board.fen() == chess.STARTING_FEN


def test_legal_move_changes_the_board_and_the_opponent_replies(chess_env):
    chess_env.reset(seed=0)
    obs, reward, terminated, _, info = chess_env.step("e 4")
    assert reward == 0.0 and not terminated and not info["invalid_action"]
    board = chess.Board(unspaced(obs))
    assert board.turn == chess.WHITE and board.fullmove_number == 2
    assert board.piece_at(chess.E4) == chess.Piece(chess.PAWN, chess.WHITE)
    assert len(chess_env.board.move_stack) == 2 and info["opponent_move"]


def test_mating_move_gives_plus_one_and_ends(chess_env):
    chess_env.reset(seed=0, options={"fen": BACK_RANK_MATE_IN_ONE})
    obs, reward, terminated, truncated, info = chess_env.step("R a 8 #")
    assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)
    assert info["outcome"] == "checkmate" and chess.Board(unspaced(obs)).is_checkmate()


def test_opponent_mate_gives_minus_one(chess_env):
    chess_env.reset(seed=0, options={"fen": AFTER_F3_E5})
    obs, reward, terminated, _, info = chess_env.step("g 4")
    assert (reward, terminated, info["success"]) == (-1.0, True, False)
    assert info["opponent_move"] == "Qh4#"


def test_stalemate_ends_with_zero(chess_env):
    chess_env.reset(seed=0, options={"fen": STALEMATE_IN_ONE})
    _, reward, terminated, _, info = chess_env.step("Q b 6")
    assert (reward, terminated, info["success"], info["outcome"]) == (0.0, True, False, "stalemate")


def test_turn_cap_counts_invalid_moves():
    # The source ends the game after the turn that takes the count past max_moves.
    env = ChessEnv(max_moves=3)
    try:
        env.reset(seed=0)
        results = [env.step("nonsense") for _ in range(4)]
        assert [r[3] for r in results] == [False, False, False, True]
        assert env.done and env.episode_return == -4.0
    finally:
        env.close()


@pytest.mark.parametrize("which", ["chess", "endgames"])
def test_the_401st_turn_is_scored_and_ends_the_game(which, chess_env, endgames_env):
    """The source's cap (llm_rl_scripts/chess/env/env.py:238-240: `num_moves_made >
    max_moves`, max_moves=400): 401 illegal moves return -401, the paper's m."""
    env = chess_env if which == "chess" else endgames_env
    obs, _ = env.reset(seed=0)
    for _ in range(400):
        _, reward, terminated, truncated, _ = env.step("nonsense")
        assert (reward, terminated, truncated) == (-1.0, False, False)
    after, reward, terminated, truncated, info = env.step("nonsense")
    assert (after, reward, terminated, truncated, info["success"]) == (obs, -1.0, False, True, False)
    assert env.done and env.agent_turns == 401 == env.max_agent_turns and env.episode_return == -401.0


def test_the_last_turn_is_played_like_any_other():
    env = ChessEnv(max_moves=1)
    try:
        env.reset(seed=0, options={"fen": BACK_RANK_MATE_IN_ONE})
        env.step("nonsense")
        _, reward, terminated, truncated, info = env.step("R a 8 #")  # the 2nd and last turn mates
        assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)
        env.reset(seed=0)
        env.step("e 4")
        obs, reward, terminated, truncated, info = env.step("N f 3")  # legal: played, answered, then the cap
        assert (reward, terminated, truncated) == (0.0, False, True) and info["opponent_move"]
        assert len(env.board.move_stack) == 4 and chess.Board(unspaced(obs)).fullmove_number == 3
    finally:
        env.close()
    with pytest.raises(ValueError, match="max_moves"):
        ChessEnv(max_moves=-1)


@pytest.mark.parametrize(
    "fen, words",
    [
        ("not a fen", "invalid FEN"),
        ("rnbqkbnr/pppppppp/8/8/4P3/8/PPPP1PPP/RNBQKBNR b KQkq - 0 1", "Black to move"),
        ("rnb1kbnr/pppp1ppp/8/4p3/6Pq/5P2/PPPPP2P/RNBQKBNR w KQkq - 1 3", "already over"),
        ("8/8/8/8/8/8/8/K7 w - - 0 1", "illegal position"),
    ],
)
def test_bad_pinned_positions_are_named(chess_env, fen, words):
    with pytest.raises(ValueError, match=words) as err:
        chess_env.reset(seed=0, options={"fen": fen})
    assert fen in str(err.value)


# -- The seeded opponent ------------------------------------------------------------


def _transcript(env, seed, moves=12):
    env.reset(seed=seed)
    for _ in range(moves):
        if env.done:
            break
        env.step(env.legal_actions()[0])
    return [(t.role, t.text) for t in env.transcript]


def test_same_seed_same_actions_same_transcript(chess_env):
    other = ChessEnv()
    try:
        first = _transcript(chess_env, 7)
        _transcript(chess_env, 123)  # another episode in between must not leak into the next
        assert _transcript(chess_env, 7) == first == _transcript(other, 7)
    finally:
        other.close()


def test_opponent_replies_depend_on_the_seed(chess_env):
    replies = set()
    for seed in range(8):
        chess_env.reset(seed=seed)
        replies.add(chess_env.step("e 4")[4]["opponent_move"])
    assert len(replies) > 1


def test_softmax_choice():
    rng = np.random.default_rng(0)
    scores = np.array([50.0, 0.0, -1_000.0])
    assert softmax_choice(scores, 0.0, rng) == 0
    draws = np.bincount([softmax_choice(scores, 50.0, rng) for _ in range(4000)], minlength=3) / 4000
    assert draws[2] == 0 and draws[0] == pytest.approx(np.e / (np.e + 1), abs=0.03)


def test_behaviour_strength_is_drawn_per_episode(chess_env):
    assert temperature_for_elo(1350) == pytest.approx(100.0)
    assert temperature_for_elo(800) > temperature_for_elo(1600)
    policy = ChessBehaviourPolicy()
    elos = set()
    for seed in range(5):
        chess_env.reset(seed=seed)
        policy.reset(chess_env, np.random.default_rng(seed))
        elos.add(policy.elo)
        assert 800 <= policy.elo <= 1600
        assert policy.act(chess_env, np.random.default_rng(seed)) in chess_env.legal_actions()
    assert len(elos) == 5


# -- Endgames -----------------------------------------------------------------------


def _check_endgame_position(board: chess.Board):
    assert board.is_valid() and board.turn == chess.WHITE
    assert not board.is_check() and board.outcome() is None
    assert material_kind(board) in endgames.MATERIAL


def test_random_endgames_are_legal_and_of_the_four_kinds(endgames_env):
    held_out = {chess.Board(fen).epd() for fen in eval_positions()}
    # Seed 0 draws from the stream build_eval_set(seed=0) drew its candidates from.
    boards = [chess.Board(unspaced(endgames_env.reset(seed=seed)[0])) for seed in range(500)]
    for board in boards:
        _check_endgame_position(board)
    assert {material_kind(b) for b in boards} == set(endgames.MATERIAL)
    assert not {b.epd() for b in boards} & held_out


def test_build_eval_set_reproduces_the_shipped_file(tmp_path):
    path = tmp_path / "eval.txt"
    first = endgames.build_eval_set(3, seed=0, depth=20, path=path)
    assert first == eval_positions()[:3]
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# build_eval_set(n=3, seed=0, depth=20") and lines[1:] == first


def test_endgame_resets_skip_evaluation_positions(endgames_env, monkeypatch):
    held_out = eval_positions()[:2]
    fresh = "8/8/8/3k4/8/8/8/KR6 w - - 0 1"
    draws = iter([chess.Board(held_out[0]), chess.Board(held_out[1]), chess.Board(fresh)])
    monkeypatch.setattr(endgames, "random_endgame", lambda rng: next(draws))
    obs, _ = endgames_env.reset(seed=0)
    assert unspaced(obs) == fresh


def test_endgame_resets_draw_with_the_seed(endgames_env):
    observations = [endgames_env.reset(seed=s)[0] for s in (0, 1, 0)]
    assert observations[0] == observations[2] != observations[1]
    _check_endgame_position(chess.Board(unspaced(observations[1])))


def test_eval_file_holds_645_distinct_allowed_positions():
    text = endgames.EVAL_SET_PATH.read_text()
    header = text.splitlines()[0]
    assert header.startswith("#") and "seed=" in header and "depth=" in header and ">= 15" in header
    fens = eval_positions()
    assert len(fens) == 645 and len({chess.Board(f).epd() for f in fens}) == 645
    for fen in fens:
        _check_endgame_position(chess.Board(fen))


def test_eval_positions_meet_the_criterion(endgames_env):
    """Rebuild the first two with the file's recipe: the engine's mates are long."""
    depth = int(Path(endgames.EVAL_SET_PATH).read_text().split("depth=")[1].split(",")[0])
    for fen in eval_positions()[:2]:
        assert endgames_env.engine.mate_in(chess.Board(fen), depth=depth) >= endgames.EVAL_MIN_MATE_MOVES


def test_eval_index_option(endgames_env):
    obs, _ = endgames_env.reset(options={"eval_index": 3})
    assert unspaced(obs) == eval_positions()[3]
    with pytest.raises(ValueError, match="eval_index"):
        endgames_env.reset(options={"eval_index": 645})
    with pytest.raises(ValueError, match="not both"):
        endgames_env.reset(options={"eval_index": 0, "fen": KQ_VS_K})


def test_expert_mates_king_and_queen_vs_king(endgames_env):
    episode = play_episode(endgames_env, StockfishPolicy(), seed=0, options={"fen": KQ_VS_K})
    assert episode.success and episode.episode_return == 1.0 and episode.agent_turns <= 15


@pytest.mark.parametrize("epsilon", [0.0, 1.0])
def test_endgame_behaviour_plays_legal_moves(endgames_env, epsilon):
    endgames_env.reset(seed=4)
    policy = EndgameBehaviourPolicy(epsilon=epsilon)
    for _ in range(5):
        if endgames_env.done:
            break
        action = policy.act(endgames_env, np.random.default_rng(0))
        assert action in endgames_env.legal_actions()
        endgames_env.step(action)


def test_endgames_is_registered_with_its_policies():
    assert isinstance(envs.policy("endgames", "behaviour"), EndgameBehaviourPolicy)
    assert isinstance(envs.policy("chess", "expert"), StockfishPolicy)


# -- The engine process -------------------------------------------------------------


def test_missing_stockfish_names_the_package(monkeypatch):
    with pytest.raises(FileNotFoundError, match="apt-get install stockfish"):
        ChessEnv(stockfish_path="/nonexistent/stockfish")
    monkeypatch.setenv("LMRL_STOCKFISH", "/nonexistent/stockfish")
    with pytest.raises(FileNotFoundError, match="LMRL_STOCKFISH"):
        find_stockfish()


def test_stockfish_path_from_the_environment_variable(monkeypatch):
    real = find_stockfish()
    monkeypatch.setenv("LMRL_STOCKFISH", real)
    monkeypatch.setenv("PATH", "")
    assert find_stockfish() == real


def _process_gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" in status.read_text()
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_close_ends_the_engine_process():
    env = ChessEnv()
    pid = env.engine.pid
    assert not _process_gone(pid)
    env.close()
    env.close()
    deadline = time.monotonic() + 5
    while not _process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _process_gone(pid)
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match="closed"):
        env.step("e 4")
